"""A small, resumable trainer shared by the sermodels recipes.

The recipe supplies a :class:`TrainTask` (how to compute losses and validate); the trainer owns the loop:

- optimiser (``sgd``/``adam``/``adamw``; subclasses replace it through the public hook :meth:`Trainer.build_optimizer`),
  the learning-rate schedule of ``scheduler.name`` (``none``, ``plateau`` = ``ReduceLROnPlateau`` on the validation
  loss per epoch, ``onecycle`` = ``OneCycleLR`` per optimiser step), early stopping (``early_stopping.patience``
  epochs without improvement, never before ``early_stopping.min_epochs``);
- ``step_groups``: each group of losses gets its own forward, backward and ``optimizer.step()`` per batch (the
  authors' interleaved Task 1+2 is ``[["task1"], ["task2"]]``; summed losses are ``[["task1", "task2"]]``); a step
  whose loss is not finite on any rank is skipped on every rank and counted;
- seeds (``seed + rank`` for the training streams: dropout, pseudo-observations) and deterministic algorithms;
- a checkpoint ``last.pt`` after every epoch (model, optimiser, scheduler, AMP scaler, early-stopping state, history,
  the python/numpy/torch/CUDA RNG states of *every* rank and the sampler epoch), written atomically by rank 0, and
  ``best.pt`` (weights of the epoch with the lowest validation loss); both carry ``meta`` (what the recipe needs to
  rebuild the model: architecture, feature settings) and load with ``torch.load(..., weights_only=True)``.
  Constructing a trainer on the same ``output_dir`` with ``resume=True`` continues from ``last.pt`` and logs
  "resuming from epoch N": a run killed mid-epoch and resumed gives the same weights and history as an uninterrupted
  run (bit for bit on CPU);
- per-epoch metrics to ``metrics.csv`` and ``metrics.json`` (and TensorBoard when it is installed), tqdm progress
  bars on rank 0, mixed precision (float16 autocast + GradScaler) on CUDA.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import TrainConfig
from ..runs import say
from .distributed import DistInfo, ShardSampler, all_reduce_sums, any_rank, barrier, gather_objects

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a requirement
    tqdm = None

log = logging.getLogger("sermodels")


class TrainTask(Protocol):
    """What a recipe gives the trainer."""

    step_groups: Sequence[Sequence[str]]

    def losses(self, model: nn.Module, batch: Dict[str, torch.Tensor], names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """One forward pass; the named losses (scalars) for this batch."""

    def validate(self, model: nn.Module, loader: DataLoader, info: DistInfo) -> Dict[str, float]:
        """Metrics over the whole (sharded) validation set, reduced over ranks; must contain ``"val_loss"``."""


class Callback(Protocol):
    def on_batch_end(self, trainer: "Trainer", epoch: int, step: int) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: Dict[str, float]) -> None: ...


@dataclass
class FitResult:
    history: List[Dict[str, float]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    skipped_steps: int
    seconds: float = 0.0
    output_dir: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """``torch.use_deterministic_algorithms`` (warn-only, so ops without a deterministic kernel still run)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def _rng_state() -> dict:
    """Every RNG stream as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint written by the trainer (``best.pt`` / ``last.pt``), loaded with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def move_to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Trains ``model`` on ``task``; see the module docstring for what it saves and how it resumes."""

    def __init__(self, config: TrainConfig, output_dir, *, seed: int = 0, info: Optional[DistInfo] = None,
                 callbacks: Sequence[Callback] = (), resume: bool = True, meta: Optional[dict] = None):
        self.config = config
        self.seed, self.resume, self.meta = int(seed), resume, dict(meta or {})
        self.info = info or DistInfo()
        self.callbacks = list(callbacks)
        self.output_dir = Path(output_dir)
        if self.config.batch_size % self.info.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be divisible by the number of processes {self.info.world_size}"
            )
        self.use_amp = bool(config.amp) and self.info.device.type == "cuda"

    # -- construction helpers ------------------------------------------------------------------------------------
    def build_optimizer(self, params) -> torch.optim.Optimizer:
        """The optimiser of ``config.optimizer`` over ``params``. Public hook: a subclass may wrap or replace it
        (the continual recipe's GEM trainer wraps it in :class:`sermodels.continual.GEMOptimizer`)."""
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=c.lr, weight_decay=c.weight_decay)

    def train_loader(self, dataset: Dataset, collate_fn: Optional[Callable] = None) -> DataLoader:
        sampler = DistributedSampler(dataset, num_replicas=self.info.world_size, rank=self.info.rank, shuffle=True,
                                     seed=self.seed, drop_last=False)
        return DataLoader(dataset, batch_size=self.config.batch_size // self.info.world_size, sampler=sampler,
                          collate_fn=collate_fn, num_workers=0)

    def eval_loader(self, dataset: Dataset, collate_fn: Optional[Callable] = None) -> DataLoader:
        sampler = ShardSampler(len(dataset), self.info)
        return DataLoader(dataset, batch_size=self.config.eval_batch_size, sampler=sampler, collate_fn=collate_fn,
                          num_workers=0)

    # -- files ---------------------------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    def _write_metrics(self, history: List[Dict[str, float]]) -> None:
        keys: List[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        with open(self.output_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)
        with open(self.output_dir / "metrics.json", "w") as f:
            json.dump(history, f, indent=1)

    def _tensorboard(self):
        if not (self.config.tensorboard and self.info.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(self, model: nn.Module, task: TrainTask, train_set: Dataset, val_set: Dataset,
            collate_fn: Optional[Callable] = None) -> FitResult:
        """Train until ``epochs`` or early stopping; leaves the best epoch's weights in ``model``."""
        c, info = self.config, self.info
        if len(train_set) == 0 or len(val_set) == 0:
            raise ValueError(f"empty dataset: {len(train_set)} training and {len(val_set)} validation items")
        if not task.step_groups or any(len(g) == 0 for g in task.step_groups):
            raise ValueError(f"task.step_groups must be non-empty groups of loss names, got {task.step_groups!r}")
        if info.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        barrier(info)
        set_deterministic(c.deterministic)
        model.to(info.device)
        net = model
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        optimizer = self.build_optimizer(model.parameters())
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        train_loader = self.train_loader(train_set, collate_fn)
        val_loader = self.eval_loader(val_set, collate_fn)
        scheduler = self._scheduler(optimizer, len(train_loader) * len(task.step_groups))

        state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
                 "skipped_steps": 0, "stopped_early": False, "seconds": 0.0}
        if self.resume and self.last_path.exists():
            ckpt = load_checkpoint(self.last_path, info.device)
            if ckpt["world_size"] != info.world_size:
                raise ValueError(f"{self.last_path} was written by {ckpt['world_size']} processes; "
                                 f"resume with the same number (got {info.world_size})")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            state = ckpt["state"]
            _set_rng_state(ckpt["rng"][info.rank])
            if info.is_main:
                done = state["stopped_early"] or state["epoch"] >= c.epochs
                say(f"{self.output_dir}: " + (f"finished before ({state['epoch']} epochs), nothing to train"
                                              if done else f"resuming from epoch {state['epoch']}"))
        else:
            seed_everything(self.seed + info.rank)

        writer = self._tensorboard()
        t_start = time.perf_counter() - state["seconds"]
        try:
            while state["epoch"] < c.epochs and not state["stopped_early"]:
                epoch = state["epoch"]
                train_loader.sampler.set_epoch(epoch)
                train_stats = self._train_epoch(net, task, train_loader, optimizer, scaler, epoch, state,
                                                scheduler if c.scheduler.name == "onecycle" else None)
                model.eval()
                with torch.no_grad():
                    val = task.validate(net, val_loader, info)
                if "val_loss" not in val:
                    raise KeyError("task.validate must return a 'val_loss' entry")
                if c.scheduler.name == "plateau":
                    scheduler.step(val["val_loss"])
                improved = val["val_loss"] < state["best_val_loss"]
                if improved:
                    state["best_val_loss"], state["best_epoch"], state["bad_epochs"] = val["val_loss"], epoch, 0
                else:
                    state["bad_epochs"] += 1
                es = c.early_stopping
                state["stopped_early"] = (es.patience is not None and state["bad_epochs"] >= es.patience
                                          and epoch + 1 >= es.min_epochs)
                row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **train_stats, **val,
                       "seconds": time.perf_counter() - t_start}
                state["history"].append(row)
                state["epoch"] = epoch + 1
                state["seconds"] = row["seconds"]
                if info.is_main:
                    log.debug(f"{self.output_dir} epoch {epoch}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds")))
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, row)
                rng = gather_objects(_rng_state(), info)
                if info.is_main:
                    self._write_metrics(state["history"])
                    if writer is not None:
                        for k, v in row.items():
                            if k != "epoch":
                                writer.add_scalar(k, v, epoch)
                    if improved:
                        _atomic_save({"model": model.state_dict(), "epoch": epoch, "metrics": row,
                                      "meta": self.meta}, self.best_path)
                    _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                  "scaler": scaler.state_dict(), "state": state, "rng": rng,
                                  "world_size": info.world_size, "config": asdict(c), "seed": self.seed,
                                  "meta": self.meta}, self.last_path)
                barrier(info)
        finally:
            if writer is not None:
                writer.close()
            del net  # the DDP wrapper holds the process group; let cleanup_distributed() release it
        if self.best_path.exists():
            model.load_state_dict(load_checkpoint(self.best_path, info.device)["model"])
        return FitResult(history=state["history"], best_epoch=state["best_epoch"],
                         best_val_loss=state["best_val_loss"], stopped_early=state["stopped_early"],
                         skipped_steps=state["skipped_steps"], seconds=state["seconds"],
                         output_dir=str(self.output_dir))

    def _scheduler(self, optimizer, steps_per_epoch: int):
        s = self.config.scheduler
        if s.name == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=s.factor,
                                                              patience=s.patience)
        if s.name == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.config.lr, total_steps=max(1, self.config.epochs * steps_per_epoch),
                pct_start=s.pct_start, div_factor=s.div_factor, final_div_factor=s.final_div_factor)
        return None

    def _train_epoch(self, net, task: TrainTask, loader: DataLoader, optimizer, scaler, epoch: int,
                     state: dict, scheduler=None) -> Dict[str, float]:
        info = self.info
        net.train()
        sums: Dict[str, float] = {}
        steps = 0
        bar = loader
        if self.config.progress and info.is_main and tqdm is not None:
            bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            batch = move_to(batch, info.device)
            for group in task.step_groups:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=info.device.type, dtype=torch.float16, enabled=self.use_amp):
                    losses = task.losses(net, batch, group)
                loss = sum(losses[name].float() for name in group)
                if any_rank(not bool(torch.isfinite(loss)), info):
                    state["skipped_steps"] += 1
                    continue
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None:
                    scheduler.step()
                for name in group:
                    sums[f"train_{name}"] = sums.get(f"train_{name}", 0.0) + float(losses[name].detach())
            steps += 1
            if bar is not loader:
                bar.set_postfix({k[6:]: f"{v / steps:.4f}" for k, v in sums.items()})
            for cb in self.callbacks:
                cb.on_batch_end(self, epoch, step)
        sums["_steps"] = float(steps)
        totals = all_reduce_sums(sums, info)
        n = max(totals.pop("_steps"), 1.0)
        return {k: v / n for k, v in totals.items()}
