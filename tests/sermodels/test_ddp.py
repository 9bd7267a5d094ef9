"""torchrun with 2 CPU processes (gloo) against the same run in one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdekit

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "single").mkdir()
    (tmp / "ddp").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(tmp / "ddp.json"), str(tmp / "ddp")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = ddp_worker.run(str(tmp / "single.json"), str(tmp / "single"))  # meanwhile, in this process
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return single, json.loads((tmp / "ddp.json").read_text())


def test_two_processes_ran(runs):
    single, ddp = runs
    assert single["world_size"] == 1 and ddp["world_size"] == 2


def test_baseline_ddp_equals_single_process(runs):
    # cross-entropy is a per-utterance mean: 2 ranks x batch 8 average to the gradient of one batch of 16, and the
    # DistributedSampler gives the same global batches; only float32 summation order differs
    single, ddp = runs
    np.testing.assert_allclose(ddp["baseline"]["params"], single["baseline"]["params"], atol=1e-6)
    for a, b in zip(single["baseline"]["history"], ddp["baseline"]["history"]):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for key, v in single["baseline"]["trained"].items():
        assert ddp["baseline"]["trained"][key] == pytest.approx(v, rel=1e-5, abs=1e-6), key


def test_mt_task1_ddp_close_to_single_process(runs):
    # Task 1's CCC is computed per rank over its half of the batch, so DDP's gradient is not exactly the one of the
    # full batch: close, not equal
    single, ddp = runs
    for a, b in zip(single["mt1"]["history"], ddp["mt1"]["history"]):
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=0.05)
    assert abs(ddp["mt1"]["history"][-1]["val_loss"] - single["mt1"]["history"][-1]["val_loss"]) < 0.05


def test_reduced_metrics_equal_global_metrics(runs):
    """Same weights, data split over 2 ranks: the reduced CCC equals the CCC over the whole test set."""
    single, ddp = runs
    for run in ("baseline", "mt1"):
        for key, v in single[run]["fixed"].items():
            # pseudo-observations are drawn per utterance (eval.seed), so soft_* tables do not depend on the rank;
            # model outputs are float32: batch composition may change the last bit of a logit
            assert ddp[run]["fixed"][key] == pytest.approx(v, rel=1e-6, abs=1e-9), (run, key)
    # independent check against kdekit on the concatenated test set, and against the (wrong) mean of shard CCCs
    data = ddp_worker.synthetic_data()
    rc = ddp_worker.config("mt1")
    torch.manual_seed(0)
    from sermodels.models import build_model
    from sermodels.train import seed_everything

    seed_everything(0)
    model = build_model("mt", 8, 4, num_annotators=ddp_worker.N_ANNOTATORS, hidden=16, dropout=0.0).eval()
    idx = torch.as_tensor(data.indices("test"))
    with torch.no_grad():
        pred = model(data.audio[idx], data.text[idx], data.annotator_ids[idx]).double()
    ratings = data.ratings[idx].double()
    mask = ~torch.isnan(ratings)
    unbiased = rc.train.diffkde.ccc_unbiased
    glob = kdekit.ccc(pred.reshape(-1, 2), ratings.reshape(-1, 2), dim=0, mask=mask.reshape(-1, 2), unbiased=unbiased)
    assert ddp["mt1"]["fixed"]["annotator_ccc_activation"] == pytest.approx(float(glob[0]), rel=1e-6)
    assert ddp["mt1"]["fixed"]["annotator_ccc_valence"] == pytest.approx(float(glob[1]), rel=1e-6)
    shards = [kdekit.ccc(pred[r::2].reshape(-1, 2), ratings[r::2].reshape(-1, 2), dim=0,
                         mask=mask[r::2].reshape(-1, 2), unbiased=unbiased) for r in range(2)]
    mean_of_shards = (shards[0] + shards[1]) / 2
    assert abs(float(mean_of_shards[0]) - float(glob[0])) > 1e-4  # the test can tell the two apart
