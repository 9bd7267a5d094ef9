"""The papers' splits from the shipped JSON files, user split files, renaming, size reports, and group k-fold."""
import json

import pytest

from sermodels.data import load_corpus
from sermodels.data.records import Utterance
from sermodels.data.splits import (
    assign_split,
    default_scheme,
    kfold,
    make_splits,
    parse_split,
    read_split_file,
    rename_partitions,
    require_partitions,
    schemes,
    split_by_file,
    split_sizes,
)
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
    assert {u.session for u in s["train"]} == {"Ses01", "Ses02", "Ses03"}
    assert {u.session for u in s["test"]} == {"Ses05"}
    s = assign_split(ie, "iemocap", "session_05F")
    assert {u.speaker for u in s["test"]} == {"Ses05F"}
    pod = write_synthetic_corpus(tmp_path / "p", "msp-podcast", n_utterances=8, n_annotators=4, audio=False)
    s = assign_split(pod, "msp-podcast", "official")
    assert set(s) == {"train", "val", "test1", "test2"} and all(len(v) == 2 for v in s.values())
    mu = write_synthetic_corpus(tmp_path / "m", "muse", n_utterances=16, n_annotators=4, audio=False)
    s = assign_split(mu, "muse", "speaker")
    assert {u.speaker for u in s["train"]} == {"20", "17", "24", "12"}
    assert {u.speaker for u in s["test"]} == {"19", "14"}
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


# ------------------------------------------------------------------------------------- a researcher's own splits

def _podcast(tmp_path, n=8):
    return write_synthetic_corpus(tmp_path / "p", "msp-podcast", n_utterances=n, n_annotators=4, audio=False)


@pytest.mark.parametrize("shape", ["json_by_id", "json_by_partition", "csv"])
def test_split_file_shapes_give_the_same_partitions(tmp_path, shape):
    utts = _podcast(tmp_path)
    ids = [u.utterance_id for u in utts]
    want = {"train": ids[:4], "dev": ids[4:6], "test": ids[6:7]}  # ids[7] is in no partition
    path = tmp_path / ("split.csv" if shape == "csv" else "split.json")
    if shape == "json_by_id":
        path.write_text(json.dumps({uid + ".wav": p for p, us in want.items() for uid in us}))  # .wav is dropped
    elif shape == "json_by_partition":
        path.write_text(json.dumps(want))
    else:
        path.write_text("FileName,Partition,note\n" + "".join(f"{uid},{p},x\n" for p, us in want.items() for uid in us))
    splits = split_by_file(utts, path)
    assert {p: [u.utterance_id for u in us] for p, us in splits.items()} == want
    assert list(splits) == ["train", "dev", "test"]


def test_split_file_errors_name_the_file_and_line(tmp_path):
    utts = _podcast(tmp_path)
    ids = [u.utterance_id for u in utts]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"utterance_id,split\n{ids[0]},train\n{ids[1]},val\n{ids[0]},test\n")
    with pytest.raises(ValueError, match=rf"bad\.csv:4: '{ids[0]}' is listed in partition 'train' and in 'test'"):
        read_split_file(bad)
    bad.write_text(f"utterance_id,split\n{ids[0]},\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: need a non-empty id and partition"):
        read_split_file(bad)
    bad.write_text("name,group\na,b\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: need an id column"):
        read_split_file(bad)
    js = tmp_path / "bad.json"
    js.write_text(json.dumps({"train": [ids[0]], ids[1]: "val"}))
    with pytest.raises(ValueError, match=r"bad\.json: values must be all partition names"):
        read_split_file(js)
    js.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_split_file(js)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_split_file(tmp_path / "missing.json")
    js.write_text(json.dumps({"train": ["nope_1", "nope_2"]}))
    with pytest.raises(ValueError, match=r"none of the 2 ids .* is an utterance of the corpus"):
        split_by_file(utts, js)
    js.write_text(json.dumps({"train": [ids[0], "nope_1"]}))
    with pytest.warns(UserWarning, match=r"1 of the 2 ids .* not utterances of the corpus .*nope_1"):
        assert [u.utterance_id for u in split_by_file(utts, js)["train"]] == [ids[0]]


def test_rename_partitions_and_empty_selection():
    utts = [Utterance(f"u{i}", "x", split=s) for i, s in enumerate(["train", "val", "test1", "test1", "test2"])]
    official = assign_split(utts, "msp-podcast", "official")
    with pytest.raises(ValueError, match=r"partition\(s\) \['test'\] of the split are missing or empty \(partitions: "
                                         r"train=1, val=1, test1=2, test2=1\); rename one"):
        require_partitions(official, ["train", "val", "test"])
    for renames in ({"test": "test1"}, ["test=test1"], "test=test1"):
        renamed = rename_partitions(official, renames)
        assert list(renamed) == ["train", "val", "test", "test2"] and len(renamed["test"]) == 2
        require_partitions(renamed, ["train", "val", "test"])
    swapped = rename_partitions(official, {"val": "test2", "test2": "val"})
    assert [len(swapped[p]) for p in ("val", "test2")] == [1, 1] and swapped["val"][0].split == "test2"
    with pytest.raises(ValueError, match=r"cannot rename partition\(s\) \['test3'\]"):
        rename_partitions(official, {"test": "test3"})
    with pytest.raises(ValueError, match=r"gives partition name\(s\) \['val'\] twice"):
        rename_partitions(official, {"val": "test1"})
    with pytest.raises(ValueError, match="must look like new=old"):
        rename_partitions(official, ["test"])
    empty_val = {"train": official["train"], "val": []}
    with pytest.raises(ValueError, match=r"\['val'\] of the split are missing or empty"):
        require_partitions(empty_val, ["train", "val"])


def test_make_splits_one_call_for_scheme_or_file(tmp_path):
    utts = _podcast(tmp_path)
    s = make_splits(utts, "MSP_Podcast", scheme="official", rename={"test": "test1"}, require=("train", "val", "test"))
    assert list(s) == ["train", "val", "test", "test2"]
    with pytest.raises(ValueError, match=r"\['test'\] of split scheme 'official' of msp-podcast are missing or empty"):
        make_splits(utts, "msp-podcast", scheme="official", require=("train", "val", "test"))
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"train": [u.utterance_id for u in utts[:6]], "test": [utts[6].utterance_id]}))
    with pytest.raises(ValueError, match=r"\['val'\] of split file .*mine\.json are missing or empty"):
        make_splits(utts, "msp-podcast", split_file=f, require=("train", "val", "test"))
    with pytest.raises(ValueError, match="exactly one of scheme and split_file"):
        make_splits(utts, "msp-podcast", scheme="official", split_file=f)


def test_split_sizes_report_and_tiny_warning():
    utts = [Utterance(f"u{i}", "x", speaker=f"s{i % 3}") for i in range(30)]
    splits = {"train": utts[:24], "val": utts[24:27], "test": []}
    lines = []
    with pytest.warns(UserWarning) as record:
        sizes = split_sizes(splits, total=30, tiny=5, log=lines.append)
    assert sizes == {"train": 24, "val": 3, "test": 0}
    assert sorted(str(w.message).split(" has")[0] for w in record) == ["partition 'test'", "partition 'val'"]
    assert lines == ["  train: 24 utterances, 3 speakers", "  val: 3 utterances, 3 speakers  [tiny: fewer than 5]",
                     "  test: 0 utterances, 0 speakers  [tiny: fewer than 5]", "  in no partition: 3 of 30 utterances"]


def test_generic_official_scheme_keeps_every_partition_of_the_file():
    utts = [Utterance(f"u{i}", "generic", split=s) for i, s in enumerate(["train", "dev", "train", "eval", None])]
    s = assign_split(utts, "generic", "official")
    assert {p: [u.utterance_id for u in us] for p, us in s.items()} == {"train": ["u0", "u2"], "dev": ["u1"],
                                                                       "eval": ["u3"]}


def test_default_schemes_and_what_a_split_value_names(tmp_path):
    """A config's ``data.split``: null -> the corpus' default scheme; a file (existing, .json/.csv, or a path) -> a
    split file; anything else -> a scheme, and a partition name given as a scheme says which scheme has it."""
    assert {c: default_scheme(c) for c in ("MSP_Improv", "iemocap", "podcast", "muse", "compare", "generic")} == {
        "MSP_Improv": "speaker_independent_is2024", "iemocap": "session", "podcast": "official", "muse": "speaker",
        "compare": "official", "generic": "official"}
    assert all(default_scheme(c) in schemes(c) for c in ("msp-improv", "iemocap", "msp-podcast", "muse"))
    plain = tmp_path / "split"
    plain.write_text("id,split\n")
    assert parse_split(None, "msp_podcast") == ("official", None)
    assert parse_split("session_is2023", "msp-improv") == ("session_is2023", None)
    assert [parse_split(v, "iemocap") for v in ("mine.JSON", "mine.csv", "splits/mine", str(plain))] == [
        (None, "mine.JSON"), (None, "mine.csv"), (None, "splits/mine"), (None, str(plain))]
    utts = _podcast(tmp_path)
    with pytest.raises(ValueError, match=r"unknown split scheme 'test1' for msp-podcast; expected one of \['all', "
                                         r"'official'\] or the path of a split file .*'test1' is a partition of "
                                         r"scheme 'official', not a scheme"):
        assign_split(utts, "podcast", "test1")


def test_required_partition_hint_names_the_likeliest_stand_in():
    utts = [Utterance(f"u{i}", "x", split=s) for i, s in enumerate(["train", "val", "test1", "test2"])]
    official = assign_split(utts, "msp-podcast", "official")
    with pytest.raises(ValueError, match=r"test2=1\); rename one, e\.g\. rename=\{'test': 'test1'\}$"):
        require_partitions(official, ["test"])  # test1 before train and val, which come first in the split
    with pytest.raises(ValueError, match=r"; pick one with --partition test1$"):
        require_partitions(official, ["test"], hint="pick one with --partition {old}")
    with pytest.raises(ValueError, match=r"\['val'\] of the split are missing or empty \(partitions: train=1\)$"):
        require_partitions({"train": official["train"]}, ["train", "val"])  # nothing could stand in: no hint
