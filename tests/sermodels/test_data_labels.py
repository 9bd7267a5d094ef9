"""Scaling, binning, annotator index, ratings tensor, distribution targets, categories and word-vector label sets."""
import math
import os

import numpy as np
import pytest
import torch

from sermodels.data import load_corpus
from sermodels.data.labels import (
    AnnotatorIndex,
    bin_low_medium_high,
    bin_values,
    distribution_targets,
    load_glove,
    majority_category,
    ratings_tensor,
    scale_ratings,
    utterance_seed,
    word_label_sets,
)
from sermodels.data.records import Utterance
from sermodels.data.synthetic import write_synthetic_corpus

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("corpus,lo,hi", [("msp-podcast", 1, 7), ("msp-improv", 1, 5), ("iemocap", 1, 5),
                                          ("muse", 1, 9), ((0, 10), 0, 10)])
def test_scale_ratings_fixed_ranges(corpus, lo, hi):
    rng = np.random.default_rng(0)
    v = rng.uniform(lo, hi, 50)
    out = scale_ratings(v, corpus)
    np.testing.assert_allclose(out, np.interp(v, [lo, hi], [-1, 1]), rtol=0, atol=1e-12)
    assert scale_ratings(float(lo), corpus) == -1.0 and scale_ratings(float(hi), corpus) == 1.0
    t = scale_ratings(torch.tensor(v), corpus)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.tensor(out))


def test_scale_ratings_bad_corpus():
    with pytest.raises(ValueError, match="no fixed rating range"):
        scale_ratings([1.0], "generic")
    with pytest.raises(ValueError, match="lo < hi"):
        scale_ratings([1.0], (5, 1))


def test_binning_matches_searchsorted_reference():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.uniform(-1, 1, 200), [-1.0, -1 / 3, 1 / 3, 1.0, np.nan]])
    for n in (3, 4):
        edges = np.linspace(-1, 1, n + 1)
        ref = np.array([-1 if np.isnan(x) else min(n - 1, max(0, int(np.sum(x >= edges)) - 1)) for x in v])
        np.testing.assert_array_equal(bin_values(v, n), ref)
        np.testing.assert_array_equal(bin_values(torch.tensor(v), n).numpy(), ref)
    assert bin_low_medium_high([-0.9, 0.0, 0.9]).tolist() == [0, 1, 2]


def test_annotator_index_roundtrip_and_unseen(tmp_path):
    idx = AnnotatorIndex(["w3", "w1", "w2", "w1"])
    assert idx.ids == ["w1", "w2", "w3"] and idx["w2"] == 1 and idx["unseen"] == -1 and len(idx) == 3
    idx.save(tmp_path / "annotators.json")
    assert AnnotatorIndex.load(tmp_path / "annotators.json") == idx
    (tmp_path / "bad.json").write_text('{"annotators": ["b", "a"]}')
    with pytest.raises(ValueError, match="sorted"):
        AnnotatorIndex.load(tmp_path / "bad.json")


def test_ratings_tensor_padding_and_index():
    utts = load_corpus("msp-improv", os.path.join(FIX, "msp_improv")).utterances
    values, ids = ratings_tensor(utts, "msp-improv")
    assert values.shape == (3, 3, 2) and ids.shape == (3, 3) and ids.dtype == torch.long
    idx = AnnotatorIndex.from_utterances(utts)
    # first utterance, annotator A1EXAMPLEWORKER-p2 rated A 3 (flipped 3) V 2 -> (0, -0.5)
    j = idx["A1EXAMPLEWORKER-p2"]
    row = (ids[0] == j).nonzero()[0, 0]
    assert torch.allclose(values[0, row], torch.tensor([0.0, -0.5]))
    assert ids[2].tolist() == [idx["A2SECOND-p1"], -1, -1] and torch.isnan(values[2, 1:]).all()
    # an index that lacks an annotator drops it
    small = AnnotatorIndex(["A2SECOND-p1"])
    v2, i2 = ratings_tensor(utts, "msp-improv", index=small, dims=("valence", "dominance"))
    assert v2.shape == (3, 1, 2) and i2[:, 0].tolist() == [-1, 0, 0]
    assert torch.allclose(v2[1, 0], torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="dims"):
        ratings_tensor(utts, "msp-improv", dims=("arousal",))


def test_distribution_targets_equal_kdekit_per_utterance_and_are_seeded(tmp_path):
    from kdekit.labels import labels_from_ratings

    utts = write_synthetic_corpus(tmp_path, "msp-podcast", n_utterances=6, n_annotators=8, seed=2, audio=False)
    utts[2].ratings = {}  # no annotator: a defined (uniform) table and its status, not an error
    p1, status = distribution_targets(utts, "msp-podcast", k=4, seed=5, grid=64, return_status=True)
    p2 = distribution_targets(utts, "msp-podcast", k=4, seed=5, grid=64)
    assert p1.shape == (6, 4, 4) and status.shape == (6,)
    assert torch.equal(p1, p2)
    # each utterance alone through kdekit: its ratings scaled by hand (sorted annotators), its own seeded generator
    for i, u in enumerate(utts):
        rows = [[(a - 1) / 3 - 1, (v - 1) / 3 - 1] for _, (a, v, _) in sorted(u.ratings.items())] or [[math.nan] * 2]
        ref = labels_from_ratings(torch.tensor([rows], dtype=torch.float64), k=4, grid=64,
                                  generator=torch.Generator().manual_seed(utterance_seed(5, u.utterance_id)))
        torch.testing.assert_close(p1[i], ref.probs[0], rtol=0, atol=1e-12)
        assert status[i] == ref.status[0]
    torch.testing.assert_close(p1[2], torch.full((4, 4), 1 / 16, dtype=torch.float64))
    assert torch.allclose(p1.sum((-1, -2)), torch.ones(6, dtype=p1.dtype))
    assert not torch.equal(p1, distribution_targets(utts, "msp-podcast", k=4, seed=6, grid=64))
    assert distribution_targets(utts, "msp-podcast", k=2, seed=5, grid=64).shape == (6, 2, 2)


def test_distribution_targets_in_chunks_equal_one_chunk(tmp_path, capsys):
    """Chunks of 2 (and any order or subset) give each utterance its label of one chunk; a bar shows progress."""
    utts = write_synthetic_corpus(tmp_path, "msp-improv", n_utterances=9, n_annotators=7, seed=4, audio=False)
    whole, status = distribution_targets(utts, "msp-improv", grid=64, seed=1, return_status=True, progress=False)
    chunked, chunked_status = distribution_targets(utts, "msp-improv", grid=64, seed=1, return_status=True,
                                                   chunk_size=2, progress=True)
    assert torch.equal(chunked, whole) and torch.equal(chunked_status, status)
    err = capsys.readouterr().err
    assert "labels: 100%" in err and "9/9" in err
    backwards = distribution_targets(utts[::-1], "msp-improv", grid=64, seed=1, chunk_size=4, progress=False)
    assert torch.equal(backwards, whole.flip(0))
    assert torch.equal(distribution_targets(utts[3:5], "msp-improv", grid=64, seed=1, progress=False), whole[3:5])
    with pytest.raises(ValueError, match="chunk_size"):
        distribution_targets(utts, "msp-improv", chunk_size=0)


def test_majority_category_iemocap4():
    c = load_corpus("iemocap", os.path.join(FIX, "iemocap"))
    assert majority_category(c.utterances) == ["neu", "hap", None]  # exc -> hap, xxx dropped
    assert majority_category(c.utterances, protocol="4class") == ["neu", None, None]
    votes = Utterance("u", "x", categories={"a": "Angry", "b": "angry", "c": "Sad"})
    tie = Utterance("v", "x", categories={"a": "Angry", "b": "Sad"})
    assert majority_category([votes, tie]) == ["ang", None]
    with pytest.raises(ValueError, match="protocol"):
        majority_category([votes], protocol="iemocap5")


def test_glove_vectors_and_label_sets():
    g = load_glove()
    np.testing.assert_allclose(g.vector("the")[:3], [0.418, 0.24968, -0.41242], rtol=1e-5)
    ang, anger = g.vector("angry"), g.vector("anger")
    assert float(ang @ anger / np.linalg.norm(ang) / np.linalg.norm(anger)) == pytest.approx(0.80, abs=0.01)
    with pytest.raises(KeyError, match="qwzxv"):
        g.vector("qwzxv")
    c = load_corpus("iemocap", os.path.join(FIX, "iemocap"))
    sets = word_label_sets(c.utterances, g)
    assert set(sets["S1"]) == {"Ses01F_impro01_F000", "Ses01F_impro01_M001"}  # xxx is outside the 4-class set
    uid = "Ses01F_impro01_F000"
    np.testing.assert_allclose(sets["S1"][uid], g.vector("neutral"))
    # S2: E2 Neutral; E3 Frustration + Anger -> mean of three label vectors
    s2 = np.mean([g.vector("neutral"), g.vector("frustration"), g.vector("anger")], axis=0)
    np.testing.assert_allclose(sets["S2"][uid], s2, rtol=1e-6)
    # S3 adds the one-word comment 'annoyed' ('a bit sarcastic' has several words and is dropped)
    s3 = np.mean([g.vector("neutral"), g.vector("frustration"), g.vector("anger"), g.vector("annoyed")], axis=0)
    np.testing.assert_allclose(sets["S3"][uid], s3, rtol=1e-6)
    m1 = "Ses01F_impro01_M001"  # exc merged into happiness for S1; Excited stays excitement in S2
    np.testing.assert_allclose(sets["S1"][m1], g.vector("happiness"))
    np.testing.assert_allclose(sets["S2"][m1], np.mean([g.vector(w) for w in ("excitement", "happiness",
                                                                              "happiness")], axis=0), rtol=1e-6)
    assert g.nearest(sets["S1"][m1], candidates=["anger", "happiness", "sadness", "neutral"]) == ["happiness"]
