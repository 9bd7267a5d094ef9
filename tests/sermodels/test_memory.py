"""Episodic memory selection (paper 003): ring buffer, bucket quotas, gender/speaker balance, length quartiles."""
import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from sermodels.continual import RingBuffer, bucket_of, replay_training_set, select_memory


def _pool(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    act, val = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    genders = rng.choice(["F", "M", None], n, p=[0.3, 0.6, 0.1]).tolist()
    speakers = rng.choice([f"s{i}" for i in range(7)] + [None], n).tolist()
    durations = rng.uniform(2, 30, n)
    return act, val, genders, speakers, durations


def test_ring_buffer_keeps_the_most_recent_items():
    rb = RingBuffer(5)
    rb.add(range(3))
    assert sorted(rb.items()) == [0, 1, 2]
    rb.add(range(3, 12))
    assert sorted(rb.items()) == [7, 8, 9, 10, 11]


def test_buckets_are_activation_times_valence_levels():
    assert bucket_of([-0.9, 0.0, 0.9, 0.9], [-0.9, 0.9, 0.0, 0.9]).tolist() == [0, 5, 7, 8]


@pytest.mark.parametrize("strategy", ["random", "length", "gender", "speaker"])
def test_memory_size_and_bucket_balance(strategy):
    act, val, genders, speakers, durations = _pool()
    idx = select_memory(act, val, strategy, 261, durations=durations, genders=genders, speakers=speakers, seed=1)
    assert len(idx) == 261 and len(set(idx)) == 261
    if strategy != "random":
        counts = np.bincount(bucket_of(act[idx], val[idx]), minlength=9)
        assert counts.tolist() == [29] * 9


def test_gender_sampling_balances_and_drops_unknown():
    act, val, genders, speakers, durations = _pool()
    idx = select_memory(act, val, "gender", 261, genders=genders, seed=2)
    g = [genders[i] for i in idx]
    assert None not in g
    for b in range(9):
        in_b = [genders[i] for i in idx if bucket_of([act[i]], [val[i]])[0] == b]
        assert abs(in_b.count("F") - in_b.count("M")) <= 1


def test_speaker_sampling_balances_speakers_within_buckets():
    act, val, genders, speakers, durations = _pool()
    idx = select_memory(act, val, "speaker", 261, speakers=speakers, seed=3)
    for b in range(9):
        spk = [speakers[i] for i in idx if bucket_of([act[i]], [val[i]])[0] == b]
        assert None not in spk
        counts = np.unique(spk, return_counts=True)[1]
        assert counts.max() - counts.min() <= 1


def test_length_sampling_takes_30_percent_from_outer_quartiles():
    act, val, genders, speakers, durations = _pool()
    idx = select_memory(act, val, "length", 261, durations=durations, seed=4)
    q1, q3 = np.quantile(durations, [0.25, 0.75])
    outer = np.mean([(durations[i] <= q1) or (durations[i] >= q3) for i in idx])
    assert outer == pytest.approx(9 * round(0.3 * 29) / 261)


def test_short_buckets_are_topped_up_and_missing_metadata_raises():
    act = np.array([0.9] * 50 + [-0.9] * 5)
    val = np.zeros(55)
    idx = select_memory(act, val, "speaker", 20, speakers=["a", "b"] * 27 + ["a"], seed=0)
    assert len(idx) == 20
    with pytest.raises(ValueError, match="durations"):
        select_memory(act, val, "length", 20)


def test_replay_training_set_appends_memories():
    a = TensorDataset(torch.arange(5))
    b = TensorDataset(torch.arange(100, 110))
    ds = replay_training_set(a, [Subset(b, [1, 3])])
    assert [int(ds[i][0]) for i in range(len(ds))] == [0, 1, 2, 3, 4, 101, 103]


@pytest.mark.parametrize("fmt", ["msp-podcast", "msp-improv"])
def test_duration_filter_and_length_memory_on_corpora_without_a_duration_column(tmp_path, fmt):
    """MSP-Podcast and MSP-Improv ship no durations: the readers take them from the audio headers, so paper 003's
    3-30 s filter keeps utterances and the length-based memory is not empty."""
    from sermodels.data import load_corpus
    from sermodels.data.labels import scale_ratings
    from sermodels.data.synthetic import write_synthetic_corpus

    write_synthetic_corpus(tmp_path, fmt, n_utterances=16, n_annotators=5, seed=2, engine="numpy",
                           clip_seconds=(2.0, 5.0))
    utts = load_corpus(fmt, tmp_path).utterances
    assert all(u.duration is not None for u in utts)
    kept = [u for u in utts if 3 <= u.duration <= 30]
    assert 0 < len(kept) < len(utts)
    act, val = (scale_ratings([u.consensus[d] for u in kept], fmt) for d in (0, 1))
    idx = select_memory(act, val, "length", 6, durations=[u.duration for u in kept], seed=0)
    assert len(idx) == 6
    with pytest.raises(ValueError, match="none of the 3 items has durations"):
        select_memory(act[:3], val[:3], "length", 2, durations=[None] * 3)
