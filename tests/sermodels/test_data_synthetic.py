"""Synthetic corpus: files in each real format read back exactly; audio prosody follows the latent state."""
import dataclasses

import numpy as np
import pytest
import soundfile as sf

from sermodels.data import load_corpus
from sermodels.data.features import log_mel
from sermodels.data.synthetic import FORMATS, synth_voice, write_synthetic_corpus
from test_data_readers import same  # NaN-aware equality of records



@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_exact(tmp_path, fmt):
    truth = write_synthetic_corpus(tmp_path, fmt, n_utterances=14, n_annotators=6, seed=3, audio=fmt in ("iemocap", "generic"))
    corpus = load_corpus(fmt, tmp_path)
    assert [u.utterance_id for u in corpus.utterances] == [u.utterance_id for u in truth]
    for t, r in zip(truth, corpus.utterances):
        for f in dataclasses.fields(t):
            if f.name != "extra":
                assert same(getattr(t, f.name), getattr(r, f.name)), (fmt, t.utterance_id, f.name)
    if fmt != "compare-share":
        assert sum(len(u.ratings) for u in truth) >= 3 * len(truth)
    assert all(not r.startswith("malformed") for _, _, r in corpus.skipped)


def test_same_seed_same_corpus_and_audio_written(tmp_path):
    a = write_synthetic_corpus(tmp_path / "a", "msp-podcast", n_utterances=4, n_annotators=5, seed=7)
    b = write_synthetic_corpus(tmp_path / "b", "msp-podcast", n_utterances=4, n_annotators=5, seed=7)
    assert [u.ratings for u in a] == [u.ratings for u in b]
    y, sr = sf.read(a[0].audio_path)
    assert sr == 16000 and 0.7 < len(y) / sr < 1.3 and np.abs(y).max() > 0.01


def test_voice_prosody_follows_activation():
    rng = np.random.default_rng(0)
    calm = synth_voice(-0.8, 0.0, "F", 1.0, 16000, rng)
    active = synth_voice(0.8, 0.0, "F", 1.0, 16000, rng)
    assert np.sqrt(np.mean(active ** 2)) > 1.5 * np.sqrt(np.mean(calm ** 2))  # louder

    def f0(y):  # autocorrelation pitch on a voiced stretch
        seg = y[4000:6048] - y[4000:6048].mean()
        ac = np.correlate(seg, seg, "full")[len(seg) - 1:]
        lo, hi = 16000 // 500, 16000 // 80
        return 16000 / (lo + np.argmax(ac[lo:hi]))

    assert f0(active) > 1.3 * f0(calm)
    # brighter spectrum when active: more energy in the upper mel bands relative to the lower ones
    tilt = lambda y: log_mel(y, 16000)[:, 60:].mean() - log_mel(y, 16000)[:, :20].mean()  # noqa: E731
    assert tilt(active) > tilt(calm)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_synthetic_corpus(tmp_path, "ravdess")
    with pytest.raises(ValueError, match="n_annotators"):
        write_synthetic_corpus(tmp_path, "iemocap", n_annotators=1)


def test_annotator_bias_sets_how_much_annotators_disagree(tmp_path):
    """Per-annotator mean offsets from the utterance consensus grow with ``annotator_bias``; a bad value is refused."""
    def offset_spread(bias):
        utts = write_synthetic_corpus(tmp_path / str(bias), "generic", n_utterances=200, n_annotators=8, seed=3,
                                      audio=False, annotator_bias=bias)
        offsets = {}
        for u in utts:
            mean = np.mean([r[0] for r in u.ratings.values()])
            for a, r in u.ratings.items():
                offsets.setdefault(a, []).append(r[0] - mean)
        return np.std([np.mean(v) for v in offsets.values()])

    assert offset_spread(0.5) > 2 * offset_spread(0.0)
    with pytest.raises(ValueError, match="annotator_bias"):
        write_synthetic_corpus(tmp_path / "bad", "generic", n_utterances=4, audio=False, annotator_bias=-0.1)
