"""Corpus readers on hand-written fixtures in each real format (tests/sermodels/fixtures/), awkward variants included."""
import math
import os
import shutil

import pytest

from sermodels.data import load_corpus
from sermodels.data.msp_improv import activation_by_category

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
NAN = math.nan


def same(a, b):
    """Equality that treats NaN == NaN inside tuples/lists/dicts."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def fixture_copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(os.path.join(FIX, name), dst)
    return dst


# ---------------------------------------------------------------------------------------------- MSP-Improv

def test_msp_improv_blocks_flip_nan_and_repeats():
    c = load_corpus("msp-improv", os.path.join(FIX, "msp_improv"))
    u = c.by_id()
    assert list(u) == ["MSP-IMPROV-S01A-F01-S-FM01", "MSP-IMPROV-S02H-M01-P-MF03", "MSP-IMPROV-S03S-F02-T-FM05"]
    a = u["MSP-IMPROV-S01A-F01-S-FM01"]
    # activation flipped 6 - A (header and evaluators); valence and dominance as stored; D NaN kept
    assert same(a.consensus, (4.0, 1.666667, 4.0))
    assert same(a.ratings, {"A3KBQJ36JL7G7C-p1": (5.0, 2.0, 4.0), "c3rguqctj3qv57avvd1auph3g3-p3b": (4.0, 1.0, NAN),
                            "A1EXAMPLEWORKER-p2": (3.0, 2.0, 4.0)})
    assert a.categories["A3KBQJ36JL7G7C-p1"] == "Angry"
    assert a.secondary["A3KBQJ36JL7G7C-p1"] == ["Frustrated", "Annoyed"]
    assert (a.speaker, a.gender, a.session, a.consensus_category) == ("F01", "F", "session1", "A")
    assert a.transcript == "I am so angry with you" and a.audio_path is None
    assert a.extra["naturalness"] == 3.5 and math.isnan(a.extra["naturalness_ratings"]["c3rguqctj3qv57avvd1auph3g3-p3b"])
    # repeated evaluator averaged NaN-aware: A (3,4) -> stored mean 3.5 -> 2.5; D (NaN, 3) -> 3
    h = u["MSP-IMPROV-S02H-M01-P-MF03"]
    assert same(h.ratings["A3KBQJ36JL7G7C-p1"], (2.5, 4.5, 3.0))
    assert same(h.consensus, (2.5, 4.5, NAN)) and h.session == "session1" and h.gender == "M"
    # out-of-range evaluator line (A:9) skipped and recorded
    s = u["MSP-IMPROV-S03S-F02-T-FM05"]
    assert list(s.ratings) == ["A2SECOND-p1"]
    assert any("out-of-range" in r and line == 13 for _, line, r in c.skipped)
    assert "3 utterances" in c.summary()


def test_msp_improv_flip_can_be_disabled_and_orientation_check():
    raw = load_corpus("msp-improv", os.path.join(FIX, "msp_improv"), flip_activation=False)
    flipped = load_corpus("msp-improv", os.path.join(FIX, "msp_improv"))
    for r, f in zip(raw.utterances, flipped.utterances):
        for ann in r.ratings:
            assert r.ratings[ann][0] == 6.0 - f.ratings[ann][0]
    by_cat = activation_by_category(flipped)
    assert by_cat["A"] > by_cat["X"]  # the angry clip is the most active after the flip


def test_msp_improv_malformed_line_strict_and_lenient(tmp_path):
    root = fixture_copy(tmp_path, "msp_improv")
    path = root / "Evaluation.txt"
    lines = path.read_text().splitlines()
    lines.insert(2, "A3KBQJ36JL7G7C-p1; Angry; garbage without attributes")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"Evaluation\.txt:3: malformed evaluator line"):
        load_corpus("msp-improv", root, lenient=False)
    c = load_corpus("msp-improv", root)
    assert len(c.utterances) == 3
    assert (str(path), 3) in [(p, line) for p, line, _ in c.skipped]
    assert "malformed evaluator line" in c.summary()


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="Evaluation.txt"):
        load_corpus("msp-improv", tmp_path)
    with pytest.raises(FileNotFoundError, match="labels_consensus.csv"):
        load_corpus("msp-podcast", tmp_path)
    with pytest.raises(FileNotFoundError, match="EmoEvaluation"):
        load_corpus("iemocap", tmp_path)
    with pytest.raises(FileNotFoundError, match="crowdsourcing"):
        load_corpus("muse", tmp_path)
    with pytest.raises(FileNotFoundError, match="lab"):
        load_corpus("compare-share", tmp_path)
    with pytest.raises(FileNotFoundError, match="ratings.csv"):
        load_corpus("generic", tmp_path)
    with pytest.raises(ValueError, match="unknown corpus name"):
        load_corpus("ravdess", tmp_path)


# ------------------------------------------------------------------------------------------------- IEMOCAP

def test_iemocap_valence_first_bracket_dimensional_categorical_and_self_lines():
    c = load_corpus("iemocap", os.path.join(FIX, "iemocap"))
    u = c.by_id()
    f0 = u["Ses01F_impro01_F000"]
    assert f0.consensus == (3.0, 2.5, 2.5)  # bracket [V, A, D] -> (A, V, D)
    assert f0.ratings == {"E3": (3.0, 2.0, 2.0), "E4": (3.0, 3.0, 3.0)}
    assert f0.extra["self_ratings"] == {"F1": (2.0, 3.0, 1.0)} and "F1" not in f0.categories
    assert f0.categories == {"E2": "Neutral", "E3": "Frustration"} and f0.secondary["E3"] == ["Anger"]
    assert f0.comments == {"E3": "annoyed, a bit sarcastic"}
    assert (f0.speaker, f0.gender, f0.session) == ("Ses01F", "F", "Ses01")
    assert f0.transcript == "Excuse me." and f0.duration == pytest.approx(8.2357 - 6.2901)
    m1 = u["Ses01F_impro01_M001"]
    assert m1.speaker == "Ses01M" and m1.consensus_category == "exc"
    # blank (E5) and out-of-range (E6) dimensional lines skipped and recorded
    assert set(m1.ratings) == {"E1", "E2"} and m1.extra["self_ratings"] == {"M1": (4.0, 5.0, 4.0)}
    assert sum("blank or out-of-range" in r for _, _, r in c.skipped) == 2
    assert len(c.utterances) == 3


def test_iemocap_drop_partial_and_strict_header(tmp_path):
    c = load_corpus("iemocap", os.path.join(FIX, "iemocap"), drop_partial=True)
    assert "Ses01F_impro01_M001" not in c.by_id() and len(c.utterances) == 2
    root = fixture_copy(tmp_path, "iemocap")
    p = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    p.write_text(p.read_text().replace("[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[4.0000, 3.5000, 3.0000]",
                                       "[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[4.0000, 3.5000]"))
    with pytest.raises(ValueError, match=r"Ses01F_impro01\.txt:11: malformed header"):
        load_corpus("iemocap", root, lenient=False)
    lenient = load_corpus("iemocap", root)
    assert [u.utterance_id for u in lenient.utterances] == ["Ses01F_impro01_F000", "Ses01F_impro01_F002"]
    assert any("outside a block" in r for _, _, r in lenient.skipped)


# -------------------------------------------------------------------------------------------- MSP-Podcast

def test_msp_podcast_v1x_emodetail_duplicates_nan_and_splits():
    c = load_corpus("msp-podcast", os.path.join(FIX, "msp_podcast_v1x"))
    u = c.by_id()
    a = u["MSP-PODCAST_0001_0008"]
    assert a.ratings == {"WORKER00001234": (3.5, 3.5, 4.5), "WORKER00000077": (5.0, 4.0, 4.0)}  # duplicate averaged
    assert a.secondary["WORKER00001234"] == ["Concerned", "Other-bored"] and a.categories["WORKER00001234"] == "Neutral"
    assert (a.split, a.speaker, a.gender, a.consensus) == ("test1", "127", "F", (4.2, 4.0, 4.4))
    assert a.transcript == "well I think so"
    b = u["MSP-PODCAST_0001_0019"]
    assert set(b.ratings) == {"WORKER00000077", "WORKER00000555"}  # the NaN row is dropped
    assert (b.speaker, b.gender, b.split) == (None, None, "train")
    assert [x.split for x in c.utterances] == ["test1", "train", "val", "test2"]
    assert u["MSP-PODCAST_0003_0001"].ratings == {}
    assert any("NaN attribute" in r for _, _, r in c.skipped)


@pytest.mark.parametrize("name", ["msp_podcast_v16", "msp_podcast_v20"])
def test_msp_podcast_column_layouts(name):
    c = load_corpus("msp-podcast", os.path.join(FIX, name))
    u = c.by_id()
    assert u["MSP-PODCAST_0001_0008"].ratings == {"WORKER00001234": (4.0, 4.0, 5.0), "WORKER00000077": (5.0, 4.0, 4.0)}
    if name == "msp_podcast_v16":  # old spelling, 'label' dir, Validation split, duplicate + NaN
        assert u["MSP-PODCAST_0001_0008"].split == "val"
        assert u["MSP-PODCAST_0001_0019"].ratings == {"WORKER00000077": (6.5, 1.5, 5.0)}
        assert u["MSP-PODCAST_0001_0008"].secondary["WORKER00001234"] == ["Concerned", "Other-bored"]
    else:  # v2.0 WorkerID; blank attribute row dropped, the other row of that worker kept
        assert u["MSP-PODCAST_0004_0002"].ratings == {"WORKER00000077": (2.0, 2.0, 3.0),
                                                     "WORKER00000555": (2.0, 3.0, 3.0)}
        assert u["MSP-PODCAST_0004_0002"].split == "test2"


def test_msp_podcast_json_consensus():
    c = load_corpus("msp-podcast", os.path.join(FIX, "msp_podcast_json"))
    u = c.by_id()
    assert u["MSP-PODCAST_0001_0008"].consensus == (4.5, 4.0, 4.5) and u["MSP-PODCAST_0001_0008"].split == "val"
    assert u["MSP-PODCAST_0005_0010"].ratings == {"WORKER00001234": (5.0, 6.0, 4.0)}
    assert u["MSP-PODCAST_0005_0010"].speaker is None


def test_msp_podcast_unknown_column(tmp_path):
    root = fixture_copy(tmp_path, "msp_podcast_v20")
    p = root / "Labels" / "labels_detailed.csv"
    p.write_text(p.read_text().replace("EmoDom\n", "EmoDom,Extra\n").replace("3.0\n", "3.0,x\n").replace("4.0\n", "4.0,x\n")
                 .replace("5.0\n", "5.0,x\n"))
    with pytest.raises(ValueError, match=r"labels_detailed\.csv:1: unknown column 'Extra'"):
        load_corpus("msp-podcast", root, lenient=False)
    c = load_corpus("msp-podcast", root)
    assert c.by_id()["MSP-PODCAST_0001_0008"].ratings["WORKER00001234"] == (4.0, 4.0, 5.0)
    assert "unknown column" in c.summary()


# ---------------------------------------------------------------------------------------------------- MuSE

def test_muse_semicolon_ratings_with_and_without_context():
    c = load_corpus("muse", os.path.join(FIX, "muse"))
    u = c.by_id()
    a = u["20_s_q01"]
    assert same(a.ratings, {"r1": (4.0, 3.0, NAN), "r2": (5.0, 3.0, NAN), "r3": (6.0, 4.0, NAN), "r4": (7.0, 2.0, NAN)})
    assert same(a.consensus, (5.5, 3.25, NAN)) and a.speaker == "20" and a.gender == "F"
    assert a.extra["stress"] == "stressed" and a.extra["self_report"] == (7.0, 3.0) and a.duration == 4.52
    assert len(a.extra["ratings_context"]) == 3
    b = u["02_ns_q03"]
    assert b.extra["stress"] == "non_stressed" and b.extra["ratings_context"] == {} and b.gender == "M"
    assert "17_s_q02" not in u  # 2 activation vs 1 valence rating: malformed, skipped
    assert any(line == 4 and "activation ratings" in r for _, line, r in c.skipped)
    ctx = load_corpus("muse", os.path.join(FIX, "muse"), context=True).by_id()
    assert same(ctx["20_s_q01"].ratings, {"r1": (5.0, 3.0, NAN), "r2": (6.0, 4.0, NAN), "r3": (7.0, 5.0, NAN)})
    assert ctx["02_ns_q03"].ratings == {}


# ------------------------------------------------------------------------------------------ ComParE, generic

def test_compare_share_blank_test_labels():
    c = load_corpus("compare-share", os.path.join(FIX, "compare_share"))
    u = c.by_id()
    assert len(c.utterances) == 5 and u["train_00001"].shares["Calmness"] == 0.5
    assert u["devel_00001"].split == "val" and u["devel_00001"].shares["Tiredness"] == 1.0
    assert u["test_00001"].shares == {} and u["test_00002"].split == "test"
    assert not c.skipped


def test_generic_long_format(tmp_path):
    c = load_corpus("generic", os.path.join(FIX, "generic"))
    u = c.by_id()
    assert same(u["u1"].ratings, {"ann1": (3.0, 2.0, 3.0), "ann2": (5.0, 1.0, NAN)})
    assert u["u1"].categories == {"ann1": "anger", "ann2": "anger"} and u["u1"].comments == {"ann1": "annoyed, tense"}
    assert u["u1"].audio_path is None and u["u1"].gender == "F"  # the listed wav does not exist
    assert u["u3"].ratings == {} and u["u3"].split == "val"
    # the same rows as Parquet
    import pandas as pd

    pd.read_csv(os.path.join(FIX, "generic", "ratings.csv"), dtype=str).to_parquet(tmp_path / "ratings.parquet")
    p = load_corpus("generic", tmp_path).by_id()
    assert same(p["u1"].ratings, u["u1"].ratings) and p["u2"].comments == {"ann2": "cheerful"}


def test_min_annotators_filter():
    c = load_corpus("msp-podcast", os.path.join(FIX, "msp_podcast_v1x"), min_annotators=2)
    assert [u.utterance_id for u in c.utterances] == ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0019",
                                                      "MSP-PODCAST_0002_0033"]
    assert any("fewer than 2 annotators" in r for _, _, r in c.skipped)
