"""Synthetic corpus: files in each real format read back exactly; audio prosody follows the latent state."""
import dataclasses

import numpy as np
import pytest
import soundfile as sf
from test_data_readers import same  # NaN-aware equality of records

from sermodels.data import load_corpus
from sermodels.data.features import log_mel
from sermodels.data.synthetic import FORMATS, synth_voice, write_synthetic_corpus


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("audio", [True, False])
def test_round_trip_exact(tmp_path, fmt, audio):
    """Every field but ``extra`` reads back as written, durations included (label files and audio headers agree)."""
    truth = write_synthetic_corpus(tmp_path, fmt, n_utterances=14, n_annotators=6, seed=3, audio=audio,
                                   engine="numpy")
    corpus = load_corpus(fmt, tmp_path)
    assert [u.utterance_id for u in corpus.utterances] == [u.utterance_id for u in truth]
    for t, r in zip(truth, corpus.utterances):
        for f in dataclasses.fields(t):
            if f.name != "extra":
                assert same(getattr(t, f.name), getattr(r, f.name)), (fmt, t.utterance_id, f.name)
    if fmt != "compare-share":
        assert sum(len(u.ratings) for u in truth) >= 3 * len(truth)
    assert not corpus.skipped
    if audio:
        for u in truth:
            info = sf.info(u.audio_path)
            assert u.duration == pytest.approx(info.frames / info.samplerate, abs=1 / info.samplerate)
    elif fmt in ("iemocap", "muse"):
        assert all(u.duration is not None for u in truth)  # the label file's own duration


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


def _rms_db(path):
    y, _ = sf.read(path)
    return 20 * np.log10(np.sqrt(np.mean(y ** 2)))


def _activation(u):
    """The utterance's activation label as its corpus states it: mean rating, or ComParE's determination share."""
    if u.corpus == "compare-share":
        return u.shares["Determination"] if u.shares else None
    return float(np.mean([r[0] for r in u.ratings.values()]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_audio_carries_the_same_utterances_labels(tmp_path, fmt):
    """Loudness of each clip read back tracks the activation label of the same utterance (learnable in principle);
    clips paired with other utterances' labels would give a correlation near 0."""
    write_synthetic_corpus(tmp_path, fmt, n_utterances=40, n_annotators=6, seed=11, engine="numpy")
    pairs = [(_rms_db(u.audio_path), _activation(u)) for u in load_corpus(fmt, tmp_path)]
    loud, act = np.array([p for p in pairs if p[1] is not None], dtype=float).T
    assert len(act) >= 26
    assert np.corrcoef(loud, act)[0, 1] > 0.7


def test_corpus_for_a_command_line(tmp_path):
    """Any alias names the layout; an existing non-empty folder is refused unless overwrite; the same seed writes
    the same files; durations span what was asked."""
    a = write_synthetic_corpus(tmp_path / "a", "MSP_Podcast", n_utterances=5, seed=4, engine="numpy",
                               clip_seconds=(3.0, 4.0))
    assert a[0].corpus == "msp-podcast" and all(3.0 <= u.duration <= 4.0 for u in a)
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_corpus(tmp_path / "a", "msp-podcast", n_utterances=5, seed=4)
    again = write_synthetic_corpus(tmp_path / "a", "msp-podcast", n_utterances=5, seed=4, engine="numpy",
                                   clip_seconds=(3.0, 4.0), overwrite=True)
    assert [u.duration for u in again] == [u.duration for u in a]
    b = write_synthetic_corpus(tmp_path / "b", "podcast", n_utterances=5, seed=4, engine="numpy",
                               clip_seconds=(3.0, 4.0))
    for u, v in zip(a, b):
        assert open(u.audio_path, "rb").read() == open(v.audio_path, "rb").read()
    with pytest.raises(ValueError, match="clip_seconds"):
        write_synthetic_corpus(tmp_path / "c", "iemocap", clip_seconds=(2.0, 1.0))
    with pytest.raises(ValueError, match="n_utterances"):
        write_synthetic_corpus(tmp_path / "c", "iemocap", n_utterances=0)
