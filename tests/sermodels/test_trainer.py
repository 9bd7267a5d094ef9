"""Trainer: resume after a kill, early stopping, LR schedule, step groups, metrics files."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sermodels.config import ConfigError, build
from sermodels.train import TrainConfig, Trainer, load_checkpoint
from sermodels.train.distributed import DistInfo


class ToyTask:
    """Regression with dropout and a random-noise term, so every RNG stream matters for reproducibility."""

    def __init__(self, step_groups=(("mse",),)):
        self.step_groups = [list(g) for g in step_groups]

    def losses(self, model, batch, names):
        x, y = batch
        pred = model(x).squeeze(-1)
        jitter = 0.01 * torch.randn_like(pred) + 0.001 * float(np.random.rand())
        out = {"mse": ((pred + jitter - y) ** 2).mean(), "l1": (pred - y).abs().mean()}
        return {n: out[n] for n in names}

    def validate(self, model, loader, info):
        se, n = 0.0, 0
        for x, y in loader:
            se += float(((model(x).squeeze(-1) - y) ** 2).sum())
            n += len(y)
        return {"val_loss": se / n}


def _data(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = x @ torch.randn(6, generator=g) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def _config(**kw):
    base = dict(epochs=6, batch_size=8, eval_batch_size=16, lr=0.02, early_stopping={"min_epochs": 1, "patience": 100},
                progress=False, tensorboard=False)
    return build(TrainConfig, base=base, overrides=[f"{k}={v}" for k, v in kw.items()])


def _trainer(tmp_path, name, callbacks=(), **kw):
    return Trainer(_config(**kw), tmp_path / name, callbacks=callbacks)


class KillAt:
    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_batch_end(self, trainer, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            raise KeyboardInterrupt("simulated kill")

    def on_epoch_end(self, trainer, epoch, metrics):
        pass


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resume_after_kill_reproduces_uninterrupted_run(tmp_path):
    train, val = _data()
    full_model = _model()
    full = _trainer(tmp_path, "full").fit(full_model, ToyTask(), train, val)

    killed_model = _model()
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, "killed", callbacks=[KillAt(3, 4)]).fit(killed_model, ToyTask(), train, val)
    ckpt = load_checkpoint(tmp_path / "killed" / "last.pt")  # weights_only=True
    assert ckpt["state"]["epoch"] == 3  # epochs 0-2 finished, epoch 3 was interrupted
    resumed_model = _model(seed=123)  # different init: everything must come from the checkpoint
    resumed = _trainer(tmp_path, "killed").fit(resumed_model, ToyTask(), train, val)

    assert _strip(resumed.history) == _strip(full.history)
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")
    last_resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    for k, v in last_full["model"].items():
        assert torch.equal(v, last_resumed["model"][k])
    assert last_full["optimizer"]["state"].keys() == last_resumed["optimizer"]["state"].keys()


def test_metrics_files_and_best_checkpoint(tmp_path):
    train, val = _data()
    model = _model()
    res = _trainer(tmp_path, "run").fit(model, ToyTask(), train, val)
    out = tmp_path / "run"
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == list(range(6))
    assert {"train_mse", "val_loss", "lr", "seconds"} <= set(rows[0])
    csv_lines = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 7 and "val_loss" in csv_lines[0]
    best = load_checkpoint(out / "best.pt")
    vals = [r["val_loss"] for r in rows]
    assert best["epoch"] == res.best_epoch == int(np.argmin(vals))
    # fit() leaves the best weights in the model
    for k, v in best["model"].items():
        assert torch.equal(model.state_dict()[k], v)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learned something


def test_early_stopping_respects_min_epochs_and_lr_schedule(tmp_path):
    train, val = _data()
    # lr 0 -> the validation loss never improves after epoch 0
    options = {"early_stopping.patience": 2, "early_stopping.min_epochs": 7, "scheduler.patience": 1}
    res = _trainer(tmp_path, "es", epochs=50, lr=0.0, **options).fit(_model(), ToyTask(), train, val)
    assert res.stopped_early and len(res.history) == 7  # patience reached at epoch 2, but not before 7 epochs

    class Flat(ToyTask):
        def validate(self, model, loader, info):
            return {"val_loss": 1.0}

    res = _trainer(tmp_path, "es2", epochs=50, lr=1e-4, **{"early_stopping.patience": 1000, "scheduler.name": "plateau",
                                                             "scheduler.patience": 1}).fit(_model(), Flat(), train, val)
    lrs = [r["lr"] for r in res.history[:6]]
    # ReduceLROnPlateau x0.1 after `patience` epochs without improvement
    assert lrs[0] == pytest.approx(1e-4) and lrs[2] == pytest.approx(1e-5) and lrs[4] == pytest.approx(1e-6)


def test_interleaved_groups_take_one_step_per_group(tmp_path):
    train, val = _data()
    counts = []

    class Counting(ToyTask):
        def losses(self, model, batch, names):
            counts.append(tuple(names))
            return super().losses(model, batch, names)

    _trainer(tmp_path, "groups", epochs=1).fit(_model(), Counting([["mse"], ["l1"]]), train, val)
    assert counts == [("mse",), ("l1",)] * 8  # 64 items / batch 8, two forward+step per batch
    counts.clear()
    _trainer(tmp_path, "summed", epochs=1).fit(_model(), Counting([["mse", "l1"]]), train, val)
    assert counts == [("mse", "l1")] * 8


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    train, val = _data()

    class Poisoned(ToyTask):
        calls = 0

        def losses(self, model, batch, names):
            Poisoned.calls += 1
            out = super().losses(model, batch, names)
            return {k: v * float("nan") if Poisoned.calls == 2 else v for k, v in out.items()}

    model = _model()
    res = _trainer(tmp_path, "nan", epochs=1).fit(model, Poisoned(), train, val)
    assert res.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_config_and_inputs(tmp_path):
    with pytest.raises(ConfigError, match="train.optimizer|optimizer: must be one of 'sgd', 'adam', 'adamw'"):
        _config(optimizer="lbfgs")
    with pytest.raises(ValueError, match="divisible"):
        Trainer(_config(batch_size=7), tmp_path / "x", info=DistInfo(rank=0, world_size=2))
    train, val = _data()
    with pytest.raises(ValueError, match="empty dataset"):
        _trainer(tmp_path, "y").fit(_model(), ToyTask(), train, TensorDataset(torch.zeros(0, 6)))


@pytest.mark.parametrize("name", ["none", "onecycle"])
def test_scheduler_is_a_config_choice(tmp_path, name):
    train, val = _data()
    res = _trainer(tmp_path, name, epochs=4, lr=0.05, **{"scheduler.name": name}).fit(_model(), ToyTask(), train, val)
    lrs = [r["lr"] for r in res.history]
    if name == "none":
        assert lrs == [pytest.approx(0.05)] * 4
    else:  # OneCycleLR stepped per optimiser step: up from lr / 25 to max_lr = lr, then annealed far below lr / 25
        assert max(lrs) <= 0.05 + 1e-12 and lrs[-1] < 0.05 / 25 / 5
        assert lrs == sorted(lrs, reverse=True)  # after the first epoch's warm-up (30 % of 32 steps), only down


class HookedTrainer(Trainer):
    built = 0

    def build_optimizer(self, params):
        HookedTrainer.built += 1
        return torch.optim.SGD(params, lr=0.0)


def test_build_optimizer_is_the_public_hook(tmp_path):
    train, val = _data()
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    HookedTrainer(_config(epochs=1), tmp_path / "hook").fit(model, ToyTask(), train, val)
    assert HookedTrainer.built == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # lr 0 from the hook
