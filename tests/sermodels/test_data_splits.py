"""The papers' splits from the shipped JSON files, and group k-fold."""
import pytest

from sermodels.data import load_corpus
from sermodels.data.records import Utterance
from sermodels.data.splits import assign_split, kfold, schemes
from sermodels.data.synthetic import write_synthetic_corpus


def test_msp_improv_is2024_and_is2023(tmp_path):
    utts = write_synthetic_corpus(tmp_path, "msp-improv", n_utterances=36, n_annotators=6, audio=False)
    s = assign_split(utts, "msp-improv", "speaker_independent_is2024")
    assert {u.speaker for u in s["val"]} == {"F02", "M01"} and {u.speaker for u in s["test"]} == {"F04", "M05"}
    assert {u.speaker for u in s["train"]} == {"F01", "F03", "F05", "F06", "M02", "M03", "M04", "M06"}
    assert sum(map(len, s.values())) == 36
    s = assign_split(utts, "msp-improv", "session_is2023")
    assert {u.session for u in s["test"]} == {"session6"} and {u.session for u in s["val"]} == {"session5"}
    assert len(s["train"]) == 24


def test_iemocap_podcast_muse_compare(tmp_path):
    ie = write_synthetic_corpus(tmp_path / "i", "iemocap", n_utterances=20, n_annotators=4, audio=False)
    s = assign_split(ie, "iemocap", "session")
    assert {u.session for u in s["train"]} == {"Ses01", "Ses02", "Ses03"} and {u.session for u in s["test"]} == {"Ses05"}
    s = assign_split(ie, "iemocap", "session_05F")
    assert {u.speaker for u in s["test"]} == {"Ses05F"}
    pod = write_synthetic_corpus(tmp_path / "p", "msp-podcast", n_utterances=8, n_annotators=4, audio=False)
    s = assign_split(pod, "msp-podcast", "official")
    assert set(s) == {"train", "val", "test1", "test2"} and all(len(v) == 2 for v in s.values())
    mu = write_synthetic_corpus(tmp_path / "m", "muse", n_utterances=16, n_annotators=4, audio=False)
    s = assign_split(mu, "muse", "speaker")
    assert {u.speaker for u in s["train"]} == {"20", "17", "24", "12"} and {u.speaker for u in s["test"]} == {"19", "14"}
    st = assign_split(load_corpus("muse", tmp_path / "m").utterances, "muse", "stressed")["test"]
    assert len(st) == 8 and all(u.extra["stress"] == "stressed" for u in st)
    assert [u.utterance_id for u in assign_split(mu, "muse", "stressed")["test"]] == [u.utterance_id for u in st]
    assert len(assign_split(mu, "muse", "full")["test"]) == 16 == len(assign_split(mu, "muse", "all")["test"])
    with pytest.raises(ValueError, match="unknown split scheme"):
        assign_split(mu, "muse", "speaker_independent_is2024")
    assert "official" in schemes("compare-share")


def test_kfold_groups_are_disjoint_and_cover():
    utts = [Utterance(f"u{i}", "x", speaker=f"s{i % 7}", session=f"S{i % 5}") for i in range(70)]
    folds = kfold(utts, 5, by="session", seed=0)
    assert len(folds) == 5
    tests = [{u.session for u in f["test"]} for f in folds]
    assert sorted(s for t in tests for s in t) == [f"S{i}" for i in range(5)]  # each session tested once
    for f in folds:
        groups = [{u.session for u in f[k]} for k in ("train", "val", "test")]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert sum(len(v) for v in f.values()) == 70 and f["val"] and f["train"]
    again = kfold(utts, 5, by="session", seed=0)
    assert [[u.utterance_id for u in f["val"]] for f in folds] == [[u.utterance_id for u in f["val"]] for f in again]
    by_spk = kfold(utts, 3, by="speaker", seed=1)
    assert sorted(len(f["test"]) for f in by_spk) == [20, 20, 30]  # 7 speakers of 10 dealt largest-first
    with pytest.raises(ValueError, match="groups"):
        kfold(utts, 6, by="session")
    with pytest.raises(ValueError, match="no speaker"):
        kfold([Utterance("a", "x")] + utts, 3)
