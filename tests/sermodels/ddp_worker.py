"""Worker for test_ddp.py: the same training + evaluation single-process or under torchrun (gloo on CPU).

``python -m torch.distributed.run --nproc_per_node=2 tests/sermodels/ddp_worker.py OUT.json WORKDIR`` or
``run(out, workdir)``
in-process. Trains the baseline (cross-entropy) and the MT model (Task 1) on fixed synthetic tensors with dropout
0, then evaluates (a) the trained models and (b) a fixed, untrained model, and writes the results from rank 0.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from sermodels.config import TrainConfig, build
from sermodels.models import build_model
from sermodels.recipes import annotators as recipe
from sermodels.train import cleanup_distributed, init_distributed, seed_everything
from sermodels.train.trainer import Trainer

N_TRAIN, N_VAL, N_TEST, N_ANNOTATORS, K = 64, 24, 20, 6, 4


def synthetic_data() -> recipe.AnnotatorData:
    g = torch.Generator().manual_seed(0)
    n = N_TRAIN + N_VAL + N_TEST
    latent = torch.rand(n, 2, generator=g) * 1.6 - 0.8
    audio = torch.cat([latent, torch.randn(n, 6, generator=g)], 1) @ torch.randn(8, 8, generator=g)
    text = torch.randn(n, 4, generator=g)
    bias = torch.randn(N_ANNOTATORS, 2, generator=g) * 0.3
    ids = torch.stack([torch.randperm(N_ANNOTATORS, generator=g)[:4] for _ in range(n)])
    ids[::3, 3] = -1
    ratings = (latent[:, None] + bias[ids.clamp(min=0)] + 0.1 * torch.randn(n, 4, 2, generator=g)).clamp(-1, 1)
    ratings[ids < 0] = float("nan")
    ids, order = ids.sort(dim=1, descending=True)
    ratings = torch.gather(ratings, 1, order[..., None].expand(-1, -1, 2))
    targets = torch.rand(n, K, K, generator=g) ** 4
    targets = targets / targets.sum((1, 2), keepdim=True)
    splits = ["train"] * N_TRAIN + ["val"] * N_VAL + ["test"] * N_TEST
    return recipe.AnnotatorData(corpus="synthetic", utterance_ids=[str(i) for i in range(n)], audio=audio, text=text,
                                ratings=ratings, annotator_ids=ids, targets=targets,
                                consensus=torch.nanmean(ratings, 1), splits=splits)


def config(run: str):
    cfg = build(recipe.Config, overrides=[
        "train.epochs=3", "train.batch_size=16", "train.eval_batch_size=8", "train.lr=0.05", "train.progress=false",
        "model.hidden=16", "model.dropout=0.0", "seeds=[0]", "eval.histograms=[soft]", "eval.annotators=[own]",
        "eval.ks=[4]", "train.diffkde.n_pseudo=50", "runs.mt1={model: {type: mt}, train: {tasks: [task1]}}"])
    return recipe.run_config(cfg, run)


def run(out_path: str, workdir: str) -> dict:
    info = init_distributed("cpu")
    data = synthetic_data()
    sets = {s: recipe.AnnotatorDataset(data, data.indices(s)) for s in ("train", "val", "test")}
    result = {"world_size": info.world_size}
    for run_name in ("baseline", "mt1"):
        rc = config(run_name)
        seed_everything(0)
        model = build_model(rc.model.type, 8, 4, num_annotators=N_ANNOTATORS, k=K, hidden=16, dropout=0.0)
        fixed = {k: v.clone() for k, v in model.state_dict().items()}
        tc = build(TrainConfig, overrides=["epochs=3", "batch_size=16", "eval_batch_size=8", "lr=0.05",
                                           "early_stopping.min_epochs=1", "progress=false"])
        fit = Trainer(tc, f"{workdir}/{run_name}", seed=0, info=info).fit(
            model, recipe.AnnotatorTask(rc, info.device), sets["train"], sets["val"], collate_fn=recipe.collate)
        trained_eval = recipe.evaluate_model(model, sets["test"], rc, info, batch_size=8)
        params = torch.cat([p.detach().double().flatten() for p in model.parameters()]).tolist()
        model.load_state_dict(fixed)
        fixed_eval = recipe.evaluate_model(model, sets["test"], rc, info, batch_size=8)
        result[run_name] = {"history": [{k: v for k, v in r.items() if k != "seconds"} for r in fit.history],
                            "trained": trained_eval, "fixed": fixed_eval,
                            "params": params}
    if info.is_main:
        with open(out_path, "w") as f:
            json.dump(result, f)
    cleanup_distributed()
    return result


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
    # results are written and the process group is destroyed: skip interpreter finalisation, where a gloo worker
    # thread still being torn down aborted a rank (SIGABRT, "terminate called without an active exception") once in CI
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
