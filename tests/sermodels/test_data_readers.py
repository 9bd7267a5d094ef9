"""Corpus readers on hand-written fixtures in each real format (tests/sermodels/fixtures/), awkward variants
included."""
import codecs
import dataclasses
import math
import os
import re
import shutil

import numpy as np
import pytest

from sermodels.data import corpus_name, load_corpus, muse
from sermodels.data.labels import ratings_tensor, scale_range
from sermodels.data.msp_improv import activation_by_category
from sermodels.data.splits import schemes

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
    assert a.extra["naturalness"] == 3.5
    assert math.isnan(a.extra["naturalness_ratings"]["c3rguqctj3qv57avvd1auph3g3-p3b"])
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
    p.write_text(p.read_text().replace("EmoDom\n", "EmoDom,Extra\n").replace("3.0\n", "3.0,x\n")
                 .replace("4.0\n", "4.0,x\n").replace("5.0\n", "5.0,x\n"))
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


# ------------------------------------------------------------------------------ real-release layouts and quirks

def test_msp_improv_release_evalution_spelling_bom_duplicates_and_durations():
    """``Evalution.txt`` with a BOM, audio in session folders: every block read, durations from the audio headers."""
    root = os.path.join(FIX, "msp_improv_release")
    c = load_corpus("msp-improv", root)
    u = c.by_id()
    assert list(u) == ["MSP-IMPROV-S01A-F01-S-FM01", "MSP-IMPROV-S02N-M01-R-MF02", "MSP-IMPROV-S04S-M02-P-FM04"]
    a = u["MSP-IMPROV-S01A-F01-S-FM01"]  # the block right after the BOM; the repeated block later is not merged
    assert same(a.ratings, {"A3KBQJ36JL7G7C-p1": (4.0, 2.0, 3.0), "A1EXAMPLEWORKER-p2": (4.0, 2.0, 3.0)})
    assert a.consensus == (4.0, 2.0, 3.0) and a.consensus_category == "A"
    assert a.transcript == "I am so angry with you"  # Text file with a BOM
    assert [x.duration for x in c] == [0.5, 0.75, 1.25]
    assert all(x.audio_path.startswith(os.path.join(root, "Audio")) for x in c)
    path = os.path.join(root, "Evalution.txt")
    assert (path, 9, "block skipped: duplicate header for MSP-IMPROV-S01A-F01-S-FM01 (first kept)") in c.skipped
    assert (path, 12, "block skipped: A=9 outside the scale 1-5") in c.skipped
    assert not any(r.startswith("evaluator line") for _, _, r in c.skipped)  # skipped blocks' lines go with them
    assert u["MSP-IMPROV-S04S-M02-P-FM04"].ratings == {}  # a block without evaluator lines is kept, and recorded
    assert ("MSP-IMPROV-S04S-M02-P-FM04", 0, "no individual ratings (kept; min_annotators=1 drops it)") in c.skipped
    assert "MSP-IMPROV-S04S-M02-P-FM04" not in load_corpus("msp-improv", root, min_annotators=1).by_id()
    with pytest.raises(ValueError, match=r"Evalution\.txt:9: block skipped: duplicate header"):
        load_corpus("msp-improv", root, lenient=False)


def test_muse_release_wav_suffix_label_folder_and_durations():
    """``Sentence_name`` with ``.wav`` keys audio and transcript; the blank Duration comes from the audio header."""
    root = os.path.join(FIX, "muse_release")
    c = load_corpus("muse", root)
    u = c.by_id()
    assert list(u) == ["20_s_q01", "02_ns_q03"]
    a, b = u["20_s_q01"], u["02_ns_q03"]
    assert a.audio_path == os.path.join(root, "Stressed", "Audio", "Stressed Question Monologue Audio", "20_s_q01.wav")
    assert "Non Stressed Question Monologue Audio [Sentence Split]" in b.audio_path
    assert a.transcript == "I was not ready for that question." and b.transcript == "My favourite place is the beach."
    assert (a.duration, b.duration) == (0.5, 0.75)  # the Duration column; the audio header for the blank one
    assert same(a.ratings, {"r1": (4.0, 3.0, NAN), "r2": (5.0, 3.0, NAN), "r3": (6.0, 4.0, NAN), "r4": (7.0, 2.0, NAN)})
    assert (a.speaker, a.gender, a.extra["stress"], b.extra["stress"]) == ("20", "F", "stressed", "non_stressed")
    path = os.path.join(root, "Survey Information (Questions, Data etc)", muse.LABEL_FILE)
    assert (path, 4, "Activation_Mean=10.5 outside the scale 1-9") in c.skipped
    assert (path, 5, "empty or duplicate Sentence_name '20_s_q01'") in c.skipped  # the same id without .wav
    with pytest.raises(ValueError, match=r"\.csv:4: Activation_Mean=10.5 outside the scale"):
        load_corpus("muse", root, lenient=False)


def test_iemocap_release_repeated_block_bracket_range_and_bom_transcription():
    root = os.path.join(FIX, "iemocap_release")
    c = load_corpus("iemocap", root)
    u = c.by_id()
    assert list(u) == ["Ses01F_impro02_F000", "Ses02M_script01_1_F001"]
    f1 = u["Ses02M_script01_1_F001"]
    assert f1.ratings == {"E1": (4.0, 2.0, 4.0), "E2": (4.0, 2.0, 4.0)}  # the first of the two blocks
    assert (f1.speaker, f1.session, f1.transcript, f1.duration) == ("Ses02F", "Ses02", "Get out!", 1.25)
    f0 = u["Ses01F_impro02_F000"]
    assert f0.transcript == "I miss him." and f0.duration == 0.5  # transcription file with a BOM
    assert f0.audio_path.endswith(os.path.join("Ses01F_impro02", "Ses01F_impro02_F000.wav"))
    ev = os.path.join(root, "Session{}", "dialog", "EmoEvaluation", "{}.txt")
    assert (ev.format(1, "Ses01F_impro02"), 9, "block skipped: val=6 outside the scale 1-5") in c.skipped
    assert (ev.format(2, "Ses02M_script01_1"), 8,
            "block skipped: duplicate utterance Ses02M_script01_1_F001 (first kept)") in c.skipped
    assert len(c.skipped) == 2  # the skipped blocks' rating lines are not reported one by one
    with pytest.raises(ValueError, match=r"Ses01F_impro02\.txt:9: block skipped: val=6"):
        load_corpus("iemocap", root, lenient=False)


def test_msp_podcast_v111_release_test3_range_and_audio_durations():
    root = os.path.join(FIX, "msp_podcast_v111")
    c = load_corpus("msp-podcast", root)
    u = c.by_id()
    assert list(u) == ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0019", "MSP-PODCAST_0007_0001"]
    a = u["MSP-PODCAST_0001_0008"]  # first row after the BOM of both label files
    assert a.ratings == {"WORKER00001234": (4.0, 4.0, 5.0), "WORKER00000077": (5.0, 4.0, 4.0)}
    assert (a.split, a.consensus, a.transcript, a.duration) == ("val", (4.2, 4.0, 4.4), "well I think so", 0.5)
    t3 = u["MSP-PODCAST_0007_0001"]  # Test3: labels withheld
    assert t3.split == "test3" and same(t3.consensus, (NAN, NAN, NAN)) and t3.ratings == {} and t3.duration == 0.25
    assert u["MSP-PODCAST_0001_0019"].duration == 1.0
    labels = os.path.join(root, "Labels")
    assert (os.path.join(labels, "labels_consensus.csv"), 4,
            "consensus EmoAct=7.5 outside the scale 1-7 (MSP-PODCAST_0002_0033.wav)") in c.skipped
    assert ("MSP-PODCAST_0007_0001", 0, "no individual ratings (kept; min_annotators=1 drops it)") in c.skipped
    with pytest.raises(ValueError, match=r"labels_consensus\.csv:4: consensus EmoAct=7.5"):
        load_corpus("msp-podcast", root, lenient=False)


@pytest.mark.parametrize("name,uid,duration", [("msp_podcast_v16", "MSP-PODCAST_0001_0008", 0.75),
                                               ("msp_podcast_json", "MSP-PODCAST_0005_0010", 0.25),
                                               ("msp_podcast_v20", "MSP-PODCAST_0004_0002", 1.0)])
def test_msp_podcast_older_audio_folders_give_durations(name, uid, duration):
    u = load_corpus("msp-podcast", os.path.join(FIX, name)).by_id()[uid]
    assert u.duration == duration and os.path.isfile(u.audio_path)


def test_compare_share_durations_and_out_of_range_shares(tmp_path):
    c = load_corpus("compare-share", os.path.join(FIX, "compare_share"))
    assert [u.duration for u in c] == [0.5, None, 0.75, None, 0.25]  # from wav/ headers; two clips are absent
    root = fixture_copy(tmp_path, "compare_share")
    p = root / "lab" / "train.csv"
    p.write_text(p.read_text() + "train_00003.wav,1.7,-0.3,0,0,0,0,0,0,0\ntrain_00004.wav,nan,0,0,0,0,0,0,0,0\n")
    c = load_corpus("compare-share", root)
    assert "train_00003" not in c.by_id() and "train_00004" not in c.by_id()
    assert (str(p), 4, "share Anger=1.7, Boredom=-0.3 outside the scale 0-1") in c.skipped
    assert (str(p), 5, "share Anger=nan outside the scale 0-1") in c.skipped
    with pytest.raises(ValueError, match=r"train\.csv:4: share Anger=1\.7"):
        load_corpus("compare-share", root, lenient=False)


def test_csv_errors_cite_the_physical_line(tmp_path):
    root = fixture_copy(tmp_path, "compare_share")
    p = root / "lab" / "train.csv"
    head = p.read_text().splitlines()[0]
    row = ",0,0,0,0,0,0,0,0,0\n"
    p.write_text(head + '\n"train\n_00009.wav"' + row + "short.wav,0,0,0\n\n" + ("train_00001.wav" + row) * 2)
    c = load_corpus("compare-share", root)
    assert (str(p), 4, "expected 10 fields, got 4") in c.skipped  # the record above spans lines 2-3
    assert (str(p), 7, "empty or duplicate filename 'train_00001.wav'") in c.skipped  # after a blank line 5


# every file a reader opens: (fixture, reader, files relative to the fixture)
OPENED_FILES = [
    ("msp_improv", "msp-improv", ["Evaluation.txt", "Text/MSP-IMPROV-S01A-F01-S-FM01.txt"]),
    ("iemocap", "iemocap", ["Session1/dialog/EmoEvaluation/Ses01F_impro01.txt",
                            "Session1/dialog/transcriptions/Ses01F_impro01.txt"]),
    ("msp_podcast_v1x", "msp-podcast", ["Labels/labels_consensus.csv", "Labels/labels_detailed.csv",
                                        "Transcripts/MSP-PODCAST_0001_0008.txt"]),
    ("msp_podcast_json", "msp-podcast", ["labels/labels_concensus.json"]),
    ("muse_release", "muse", ["Combined/Utterance Transcripts/02_ns_q03.txt"]),
    ("muse", "muse", ["SurveyInformation/Emotion data from crowdsourcing (C is when annotators had access to all "
                      "previous sentences).csv"]),
    ("compare_share", "compare-share", ["lab/train.csv", "lab/devel.csv"]),
    ("generic", "generic", ["ratings.csv"]),
]


def records(corpus):
    return [[(f.name, getattr(u, f.name)) for f in dataclasses.fields(u) if f.name != "audio_path"] for u in corpus]


@pytest.mark.parametrize("fixture,name,files", OPENED_FILES)
def test_a_utf8_bom_in_any_file_changes_nothing(tmp_path, fixture, name, files):
    plain = load_corpus(name, os.path.join(FIX, fixture))
    root = fixture_copy(tmp_path, fixture)
    for rel in files:
        p = root / rel
        p.write_bytes(codecs.BOM_UTF8 + p.read_bytes())
    with_bom = load_corpus(name, root)
    assert same(records(with_bom), records(plain))
    assert [r for _, _, r in with_bom.skipped] == [r for _, _, r in plain.skipped]


@pytest.mark.parametrize("fixture,name,files", OPENED_FILES)
def test_undecodable_bytes_are_recorded_with_their_line(tmp_path, fixture, name, files):
    """A Latin-1 byte in the last line of each opened file: decoded as U+FFFD and recorded (strict mode raises)."""
    root = fixture_copy(tmp_path, fixture)
    for rel in files:
        p = root / rel
        lines = p.read_bytes().rstrip(b"\n").split(b"\n")
        lines[-1] = lines[-1].replace(b"e", b"\xe9", 1) if b"e" in lines[-1] else lines[-1] + b" \xe9"
        p.write_bytes(b"\n".join(lines) + b"\n")
        column = lines[-1].index(b"\xe9") + 1
        c = load_corpus(name, root)
        assert (str(p), len(lines), f"bytes that are not UTF-8 (b'\\xe9' at column {column}) replaced by U+FFFD") \
            in c.skipped, rel
        with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:{len(lines)}: bytes that are not UTF-8"):
            load_corpus(name, root, lenient=False)
        shutil.copyfile(os.path.join(FIX, fixture, rel), p)  # one file at a time


def test_transcript_with_undecodable_byte_keeps_the_rest(tmp_path):
    root = fixture_copy(tmp_path, "msp_improv")
    p = root / "Text" / "MSP-IMPROV-S01A-F01-S-FM01.txt"
    p.write_bytes(b"caf\xe9 au lait\n")
    u = load_corpus("msp-improv", root).by_id()["MSP-IMPROV-S01A-F01-S-FM01"]
    assert u.transcript == "caf\ufffd au lait"


def test_audio_durations_are_cached_and_refreshed(tmp_path, monkeypatch):
    import soundfile as sf

    root = fixture_copy(tmp_path, "msp_podcast_v111")
    calls = []
    info = sf.info
    monkeypatch.setattr(sf, "info", lambda p: calls.append(p) or info(p))
    first = [u.duration for u in load_corpus("msp-podcast", root)]
    assert first == [0.5, 1.0, 0.25] and len(calls) == 3
    assert [u.duration for u in load_corpus("msp-podcast", root)] == first and len(calls) == 3  # from the cache
    sf.write(str(root / "Audios" / "MSP-PODCAST_0001_0019.wav"), np.zeros(4000, dtype=np.float32), 8000)
    assert [u.duration for u in load_corpus("msp-podcast", root)] == [0.5, 0.5, 0.25] and len(calls) == 4
    assert all(u.duration is None for u in load_corpus("msp-podcast", root, probe_audio=False)
               if u.utterance_id != "MSP-PODCAST_0007_0001")


def test_unreadable_audio_header_is_recorded(tmp_path):
    root = fixture_copy(tmp_path, "msp_podcast_v16")
    bad = root / "audio_16kHz" / "MSP-PODCAST_0001_0008.wav"
    bad.write_bytes(b"not a wav file")
    c = load_corpus("msp-podcast", root)
    assert c.by_id()["MSP-PODCAST_0001_0008"].duration is None
    assert any(p == str(bad) and r.startswith("cannot read the audio header") for p, _, r in c.skipped)
    with pytest.raises(ValueError, match="cannot read the audio header"):
        load_corpus("msp-podcast", root, lenient=False)


@pytest.mark.parametrize("alias", ["MSP_Podcast", "msp_podcast", "MSP-PODCAST", "podcast", " msp podcast "])
def test_corpus_name_aliases(alias):
    assert corpus_name(alias) == "msp-podcast"
    c = load_corpus(alias, os.path.join(FIX, "msp_podcast_v1x"))
    assert c.name == "msp-podcast" and len(c) == 4 and scale_range(alias) == (1.0, 7.0)
    assert "official" in schemes(alias)


def test_generic_rating_range_scales_labels(tmp_path):
    root = os.path.join(FIX, "generic")
    with pytest.raises(ValueError, match="no rating range"):
        ratings_tensor(load_corpus("generic", root).utterances, load_corpus("generic", root))
    c = load_corpus("generic", root, rating_range=(1, 5))
    assert c.rating_range == (1.0, 5.0) and scale_range(c) == (1.0, 5.0)
    values, _ = ratings_tensor(c.utterances, c)
    assert values[0, 0].tolist() == [0.0, -0.5]  # ann1 on u1: mean of (4, 2) and (2, 2) -> (3, 2) on 1-5
    narrow = load_corpus("generic", root, rating_range=(1, 4))  # ann1's 4 fits, ann2's 5 does not
    assert set(narrow.by_id()["u1"].ratings) == {"ann1"}
    assert any(r.startswith("out-of-range rating dropped (u1, ann2)") for _, _, r in narrow.skipped)
    for bad in [(5, 1), (1,), "1-5", (0, float("inf"))]:
        with pytest.raises(ValueError, match="rating_range"):
            load_corpus("generic", root, rating_range=bad)
    with pytest.raises(ValueError, match="rating_range"):
        load_corpus("msp-improv", os.path.join(FIX, "msp_improv"), rating_range=(3, 3))


def test_a_rating_range_replaces_a_fixed_scale():
    """``rating_range`` works for every corpus: a fixed scale is replaced, so the ratings scale from it."""
    root = os.path.join(FIX, "msp_podcast_v1x")
    fixed, wide = load_corpus("msp-podcast", root), load_corpus("msp-podcast", root, rating_range=(0, 8))
    assert fixed.rating_range == (1.0, 7.0) and wide.rating_range == (0.0, 8.0)
    a, _ = ratings_tensor(fixed.utterances, fixed)
    b, _ = ratings_tensor(wide.utterances, wide)
    raw = (a + 1) / 2 * 6 + 1  # back to the 1-7 ratings
    np.testing.assert_allclose(b.numpy(), (raw / 8 * 2 - 1).numpy(), atol=1e-6, equal_nan=True)
