"""A researcher's own corpus, from the command line alone: ``sermodels synth`` writes it in a real layout, then
``labels``, ``features`` (offline spectral front end), ``train`` and ``evaluate`` run on it with the data options
a real release needs: corpus aliases, split files, partition renaming (MSP-Podcast's test1 as ``test``), the rating
range of a generic corpus, and partitions picked for evaluation. Every error is ``sermodels: error: ...`` with exit
status 2 and names the argument, file or partition to fix. ``features`` under ``torchrun --nproc-per-node 2`` fills
the same cache as one process, and a rerun fills only the gaps.

The recipes' learning on these layouts is tested in test_learning.py; here runs are two epochs long.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from corpora import synth

from sermodels.cli import main
from sermodels.data import load_corpus
from sermodels.data.synthetic import FORMATS

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--run", "mt", "seeds=[0]", "model.hidden=16", "features.audio_model=logmel", "features.text_model=null",
         "train.epochs=2", "train.early_stopping.min_epochs=1", "data.labels.grid=64", "eval.histograms=[soft]",
         "eval.ks=[4]", "train.diffkde.n_pseudo=50", "train.progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")



def fails(argv, capsys, *messages):
    """Run ``argv``: exit status 2 and one ``sermodels: error:`` line holding every message."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("sermodels: error: "), err
    for m in messages:
        assert m in err, (m, err)
    return err


def train_annotators(root, corpus, out, *overrides):
    return main(["train", "annotators", "--corpus", corpus, "--data-root", str(root), "--output-dir", str(out),
                 *QUICK, *overrides])


@pytest.mark.parametrize("layout", FORMATS)
def test_synth_writes_a_corpus_in_each_layout(tmp_path, layout, capsys):
    """Clips of 2-6 s by default, so paper 003's 3-30 s filter keeps most of them; the next commands are shown."""
    root = tmp_path / layout
    assert main(["synth", "--corpus", layout, "--out", str(root), "--utterances", "8", "--engine", "numpy"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 8 utterances of a synthetic {layout} corpus to {root}" in printed
    assert "train:  sermodels train " in printed
    corpus = load_corpus(layout, root)
    assert len(corpus) == 8 and not corpus.skipped
    assert all(2.0 <= u.duration <= 6.0 for u in corpus.utterances)
    assert any(u.duration >= 3.0 for u in corpus.utterances)
    if layout != "compare-share":
        assert all(len(u.ratings) >= 3 for u in corpus.utterances)
    fails(["synth", "--corpus", layout, "--out", str(root)], capsys, f"output folder {root} is not empty")
    assert main(["synth", "--corpus", layout, "--out", str(root), "--utterances", "4", "--no-audio",
                 "--overwrite"]) == 0


def test_msp_podcast_release_test1_as_test_and_evaluation_of_any_partition(tmp_path, capsys):
    """The official split has test1 and test2, no ``test``: the annotators recipe says how to rename, trains once
    renamed, and ``evaluate`` picks a partition of a scheme (and says how when the selection is empty)."""
    root = synth(tmp_path / "podcast", "msp-podcast", 48)
    assert main(["labels", "--corpus", "podcast", "--data-root", root, "--out", str(tmp_path / "l.pt"),
                 "--grid", "64", "--split", "official"]) == 0
    saved = torch.load(tmp_path / "l.pt", weights_only=True)
    assert sorted(set(saved["splits"])) == ["test1", "test2", "train", "val"]
    assert saved["rating_range"] == [1.0, 7.0]
    assert main(["features", "--corpus", "msp_podcast", "--data-root", root, "--cache-dir", str(tmp_path / "f"),
                 "--audio-model", "logmel", "--text-model", "none"]) == 0
    assert "audio: 48 utterances, feature shape (80,)" in capsys.readouterr().out

    run = tmp_path / "run"
    capsys.readouterr()
    assert train_annotators(root, "msp_podcast", run) == 2
    captured = capsys.readouterr()
    assert "partitions of the split scheme 'official' of msp-podcast:\n  train: 12 utterances" in captured.out
    assert ("partition(s) ['test'] of the split scheme 'official' of msp-podcast are missing or empty (partitions: "
            "train=12, val=12, test1=12, test2=12); rename one, e.g. data.partitions.test=test1") in captured.err
    assert not run.exists()  # refused before anything was written

    assert train_annotators(root, "msp_podcast", run, "data.partitions.test=test1",
                            f"features.cache_dir={tmp_path / 'f'}") == 0
    printed = capsys.readouterr().out
    assert "renamed test <- test1:" in printed and "  test: 12 utterances" in printed
    results = json.loads((run / "results.json").read_text())
    assert json.loads((run / "run.json").read_text())["config_items"]["data.corpus"] == "msp-podcast"
    assert np.isfinite(results["runs"]["mt"][0]["test"]["soft_own_k4_tvd"])

    # the run's own corpus, another partition of its split: every trained annotator's head
    assert main(["evaluate", str(run), "--partition", "test2"]) == 0
    assert "msp-podcast, partition test2 (12 utterances)" in capsys.readouterr().out
    saved = json.loads((run / "zero_shot_msp-podcast_test2.json").read_text())
    assert saved["n_utterances"] == 12 and np.isfinite(saved["runs"]["mt"][0]["zero_shot"]["msp-podcast"]
                                                      ["soft_all_k4_tvd"])
    fails(["evaluate", str(run), "--split", "official"], capsys,
          "partition(s) ['test'] of the split scheme 'official' of msp-podcast are missing or empty",
          "pick one with --partition test1")
    fails(["evaluate", str(run), "--split", "test1"], capsys,
          "unknown split scheme 'test1' for msp-podcast", "'test1' is a partition of scheme 'official', not a scheme")
    assert main(["evaluate", str(run), "--split", "official", "--partition", "test1"]) == 0


def test_labels_refuses_a_missing_data_root_and_a_bad_grid_before_reading(tmp_path, capsys):
    """``sermodels labels`` names what is wrong before any data work: a data root that does not exist, and k/grid
    pairs the k x k targets cannot have (checked even where the corpus is fine)."""
    missing = tmp_path / "nowhere"
    fails(["labels", "--corpus", "msp_podcast", "--data-root", str(missing), "--out", str(tmp_path / "l.pt")], capsys,
          f"data root {missing} does not exist")
    root = synth(tmp_path / "improv", "msp-improv", 6, "--no-audio")
    for k, grid in (("3", "64"), ("4", "48"), ("1", "64")):
        err = fails(["labels", "--corpus", "msp-improv", "--data-root", root, "--out", str(tmp_path / "l.pt"),
                     "--k", k, "--grid", grid], capsys, "--k, --grid: grid must be a power of two divisible by k >= 2")
        assert f"k={k}, grid={grid}" in err
    assert not (tmp_path / "l.pt").exists()


def test_generic_csv_corpus_rating_range_and_split_file(tmp_path, capsys):
    """A generic CSV needs its rating range (``--range`` for labels, ``data.rating_range`` for training) and gets
    its partitions from a user's split file, renamed to the recipe's names."""
    root = synth(tmp_path / "generic", "generic", 60)
    out = tmp_path / "l.pt"
    fails(["labels", "--corpus", "generic", "--data-root", root, "--out", str(out)], capsys,
          "generic at", "has no fixed rating scale: pass --range LO HI")
    assert main(["labels", "--corpus", "generic", "--data-root", root, "--out", str(out), "--range", "0", "10",
                 "--grid", "64", "--scaling", "scale"]) == 0
    saved = torch.load(out, weights_only=True)
    corpus = load_corpus("generic", root)
    first = corpus.utterances[0]
    row = sorted(first.ratings)  # annotators of a row come in index order
    expected = torch.tensor([[first.ratings[a][0] / 5 - 1, first.ratings[a][1] / 5 - 1] for a in row])
    torch.testing.assert_close(saved["ratings"][0, :len(row)].double(), expected.double())
    assert saved["rating_range"] == [0.0, 10.0]
    # the default scaling maps each dimension's own lowest and highest rating of the corpus onto -1 and 1
    assert main(["labels", "--corpus", "generic", "--data-root", root, "--out", str(out), "--range", "0", "10",
                 "--grid", "64"]) == 0
    saved = torch.load(out, weights_only=True)
    for d, dim in enumerate(("activation", "valence")):
        values = [r[d] for u in corpus.utterances for r in u.ratings.values()]
        assert saved["label_scale"]["ranges"][dim] == [min(values), max(values)] and min(values) > 0
        finite = saved["ratings"][..., d][~torch.isnan(saved["ratings"][..., d])]
        assert float(finite.min()) == -1.0 and float(finite.max()) == 1.0

    ids = [u.utterance_id for u in corpus.utterances]
    split_file = tmp_path / "my split.csv"
    split_file.write_text("file,set\n" + "".join(f"{uid}.wav,{'fit' if i < 40 else 'dev' if i < 50 else 'eval'}\n"
                                                  for i, uid in enumerate(ids)))
    run = tmp_path / "run"
    fails(["train", "annotators", "--corpus", "generic", "--data-root", root, "--output-dir", str(run), *QUICK,
           f"data.split={split_file}"], capsys,
          "has no fixed rating scale: set data.rating_range=[lo,hi], its lowest and highest possible rating (e.g. "
          "data.rating_range=[1,5])")
    fails(["train", "annotators", "--corpus", "generic", "--data-root", root, "--output-dir", str(run), *QUICK,
           "labels.range=[1,5]"], capsys, "did you mean 'data.rating_range'?")
    fails(["train", "annotators", "--corpus", "generic", "--data-root", root, "--output-dir", str(run), *QUICK,
           "data.rating_range=[1,5]", f"data.split={split_file}"], capsys,
          f"partition(s) ['train', 'val', 'test'] of the split file {split_file} are missing or empty (partitions: "
          "fit=40, dev=10, eval=10); rename one, e.g. data.partitions.train=fit")
    assert train_annotators(root, "generic", run, "data.rating_range=[1,5]", f"data.split={split_file}",
                            "data.partitions={train: fit, val: dev, test: eval}") == 0
    printed = capsys.readouterr().out
    assert f"partitions of the split file {split_file}, renamed train <- fit, val <- dev, test <- eval:" in printed
    assert "  train: 40 utterances" in printed and "  test: 10 utterances" in printed
    # evaluate: the run's own corpus, range and split by default; a split file of its own with --split
    assert main(["evaluate", str(run)]) == 0 and "generic test partition" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--partition", "test"]) == 0
    assert json.loads((run / "zero_shot_generic_test.json").read_text())["n_utterances"] == 10
    again = tmp_path / "again.json"
    again.write_text(json.dumps({"test": ids[:5]}))
    assert main(["evaluate", str(run), "--split", str(again)]) == 0
    assert json.loads((run / "zero_shot_generic_test.json").read_text())["n_utterances"] == 5
    fails(["evaluate", str(run), "--split", str(tmp_path / "missing.json")], capsys,
          f"split file not found: {tmp_path / 'missing.json'}")


def test_iemocap_training_with_muse_as_zero_shot_test_corpus(tmp_path, capsys):
    """MuSE's raters are anonymous, so it serves as a zero-shot test corpus (its stressed / non-stressed halves),
    as in the annotators paper's Table 2; models train on an IEMOCAP-layout corpus (its session split)."""
    muse = synth(tmp_path / "muse", "muse", 32)
    assert main(["labels", "--corpus", "MuSE", "--data-root", muse, "--out", str(tmp_path / "l.pt"),
                 "--grid", "64", "--split", "stressed"]) == 0
    saved = torch.load(tmp_path / "l.pt", weights_only=True)
    assert saved["rating_range"] == [1.0, 9.0] and saved["splits"].count("test") == 16
    assert main(["features", "--corpus", "muse", "--data-root", muse, "--cache-dir", str(tmp_path / "f"),
                 "--audio-model", "logmel", "--text-model", "none"]) == 0
    iemocap = synth(tmp_path / "iemocap", "iemocap", 40)
    run = tmp_path / "run"
    fails(["train", "annotators", "--corpus", "muse", "--data-root", muse, "--output-dir", str(run), *QUICK],
          capsys, "muse's annotator ids name positions within an utterance, not people")
    assert train_annotators(iemocap, "IEMOCAP", run, f"features.cache_dir={tmp_path / 'f'}",
                            f"eval.test_corpora=[{{corpus: MuSE, root: '{muse}', split: stressed}}]") == 0
    printed = capsys.readouterr().out
    assert "partitions of the split scheme 'session' of iemocap:\n  train: 24 utterances, 6 speakers" in printed
    assert "partitions of the split scheme 'stressed' of muse:\n  test: 16 utterances" in printed
    zero_shot = json.loads((run / "results.json").read_text())["runs"]["mt"][0]["zero_shot"]
    assert set(zero_shot) == {"muse"} and np.isfinite(zero_shot["muse"]["soft_all_k4_jsd"])
    assert main(["evaluate", str(run), "--corpus", "muse", "--data-root", muse, "--split", "non_stressed"]) == 0
    assert "muse, partition test (16 utterances)" in capsys.readouterr().out
    fails(["evaluate", str(run), "--corpus", "muse"], capsys, "--corpus muse needs --data-root")


def test_label_embedding_on_a_generic_corpus_without_sessions_uses_its_split(tmp_path, capsys):
    """Leave-one-session-out needs sessions; ``data.split`` gives one train / val / test fold instead."""
    root = synth(tmp_path / "generic", "generic", 36)
    run = tmp_path / "run"
    args = ["train", "label_embedding", "--corpus", "generic", "--data-root", root, "--output-dir", str(run),
            "features.audio_model=mfcc", "train.epochs=1", "train.sets=[S1]", "train.losses=[mse]"]
    fails(args, capsys, "leave-one-session-out needs >= 2 sessions, found []; set data.split")
    assert main(args + ["data.split=official"]) == 0
    printed = capsys.readouterr().out
    assert "partitions of the split scheme 'official' of generic:\n  train: 12 utterances" in printed
    per_fold = json.loads((run / "results.json").read_text())["per_fold"]
    assert [f["session"] for f in per_fold["M1_mse"]] == ["split"] and 0 <= per_fold["M1_mse"][0]["UA"] <= 1


def test_labels_in_chunks_equal_one_chunk_and_show_progress(tmp_path, capsys):
    root = synth(tmp_path / "improv", "msp-improv", 30, "--no-audio")
    for chunk, name in ((4096, "whole.pt"), (7, "chunked.pt")):
        capsys.readouterr()
        assert main(["labels", "--corpus", "improv", "--data-root", root, "--out", str(tmp_path / name), "--grid",
                     "64", "--chunk-size", str(chunk)]) == 0
        err = capsys.readouterr().err
        assert "labels: 100%" in err and "30/30" in err
    whole, chunked = (torch.load(tmp_path / n, weights_only=True) for n in ("whole.pt", "chunked.pt"))
    assert torch.equal(whole["targets"], chunked["targets"]) and whole["targets"].shape == (30, 4, 4)


def test_recipes_name_what_is_wrong(tmp_path, capsys):
    improv = synth(tmp_path / "improv", "msp-improv", 24)
    fails(["train", "annotators", "--corpus", "msp_podkast", "--data-root", improv, *QUICK], capsys,
          "data.corpus: unknown corpus name(s) ['msp_podkast']; known: msp-improv, iemocap, msp-podcast")
    fails(["train", "annotators", "--data-root", improv, *QUICK, "data.split=splits/mine.json"], capsys,
          "split file not found: splits/mine.json")
    fails(["train", "annotators", "--data-root", improv, *QUICK, "data.partitions.test=test3"], capsys,
          "cannot rename partition(s) ['test3']")
    fails(["train", "continual", "--data-root", str(tmp_path), "data.rating_range=[1,5]"], capsys,
          "data.rating_range: the continual recipe reads each corpus on its own fixed scale")
    corpora = tmp_path / "corpora"
    for corpus in ("msp-podcast", "msp-improv"):
        synth(corpora / corpus, corpus, 8)
    fails(["train", "continual", "--corpus", "podcast,improv", "--data-root", str(corpora), "data.min_duration=3",
           "features.audio_model=logmel"], capsys,
          "data.min_duration=3.0 / data.max_duration=None s leave no utterance of msp-podcast")
    run = tmp_path / "emotion_share"
    compare = synth(tmp_path / "compare", "compare-share", 12)
    assert main(["train", "emotion_share", "--corpus", "compare", "--data-root", compare, "--output-dir", str(run),
                 "features.audio_model=logmel", "train.epochs=1", "model.architectures=[1]"]) == 0
    fails(["evaluate", str(run), "--split", "official"], capsys,
          "recipe 'emotion_share' evaluates its own test partitions only (--split given)")
    fails(["train", "emotion_share", "--corpus", "msp-improv", "--data-root", improv, "--output-dir",
           str(tmp_path / "x")], capsys, "no utterance of msp-improv at", "has the 9 emotion shares")


def _cache(folder):
    return {p.relative_to(folder): p for p in sorted(Path(folder).rglob("*.npy"))}


def test_features_under_torchrun_equal_the_single_process_cache_and_resume(tmp_path, capsys):
    root = synth(tmp_path / "improv", "msp-improv", 10)
    args = ["features", "--corpus", "msp-improv", "--data-root", root, "--audio-model", "mfcc", "--text-model", "none",
            "--device", "cpu"]
    assert main(args + ["--cache-dir", str(tmp_path / "single")]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")

    def torchrun():
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "sermodels", *args, "--cache-dir", str(tmp_path / "ddp")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    printed = torchrun()
    assert printed.count("audio: 10 utterances, feature shape (13,)") == 1 and "(2 processes)" in printed
    single, ddp = _cache(tmp_path / "single"), _cache(tmp_path / "ddp")
    assert sorted(single) == sorted(ddp) and len(single) == 10
    for key, path in single.items():
        assert path.read_bytes() == ddp[key].read_bytes()
    gone = sorted(ddp)[:3]
    for key in gone:
        ddp[key].unlink()
    kept = {key: os.stat(p).st_mtime_ns for key, p in ddp.items() if key not in gone}
    torchrun()
    again = _cache(tmp_path / "ddp")
    assert sorted(again) == sorted(single)
    assert {key: os.stat(again[key]).st_mtime_ns for key in kept} == kept  # only the gaps were computed
    for key, path in single.items():
        assert path.read_bytes() == again[key].read_bytes()
