"""Recipe: ComParE 2023 Emotion Share with CNN+LSTM(+attention) on SSL features (Mohapatra et al., ACM MM 2023;
paper 004).

Features: frames of one SSL layer (``features.audio_model``, ``features.layer``; the paper's best is HuBERT-large,
last layer), each utterance at its own length; batches are zero-padded with masks (no fixed 398/199 frames).
Models: :class:`~sermodels.models.emotion_share.EmotionShareNet`, Architecture 1 (``attention: false``) and/or 2.
``per_emotion: true`` trains one single-output model per emotion (the authors' scripts), otherwise one 9-output
model (``model.per_emotion``, ``model.architectures``). Loss MSE, Adam. Early stopping uses ``data.holdout`` of the
training partition; results are reported on ``eval.partition`` (``val`` = the ComParE devel partition, as the
paper's tables; the official test labels are blank), as the mean over ``seeds`` of each seed's Spearman rho.

Paper protocol (real corpus): ``features.audio_model`` a local hubert-large-ll60k, ``features.layer`` -1,
``model`` {per_emotion: true, architectures: [1, 2], channels: [768, 384, 192], lstm_hidden: 512, head: null,
output_activation: relu}, ``train`` {epochs: 150, batch_size: 128, optimizer: adam, lr: 1e-4,
early_stopping: {patience: 10, min_epochs: 10}}.

Output: Table 1 (Spearman rho per emotion and the mean, one row per architecture, the ComParE baseline row quoted
from the paper) and Table 2 (mean rho and percentage change against the baseline's 0.500).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from ..config import ConfigError, DataConfig, RecipeConfig, TrainConfig
from ..data.compare_share import EMOTIONS
from ..data.features import extract_features
from ..models.emotion_share import EmotionShareNet
from ..recipe_losses import mse_loss
from ..runs import data_fingerprint, say
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, encoder_path, format_table, pad_collate, predict, print_tables,
                      read_corpus, split_utterances, start_run)

CURVE_METRICS = ("val_loss",)


@dataclass
class Data(DataConfig):
    """``holdout``: fraction of the training partition used for early stopping (drawn with ``holdout_seed``);
    ``split`` null = the corpus' default scheme (ComParE: ``official``); training needs partitions ``train`` and
    ``eval.partition``."""

    corpus: Optional[str] = "compare-share"
    holdout: float = 0.1
    holdout_seed: int = 0


@dataclass
class Features:
    """Frames of one SSL layer, cached in ``cache_dir`` (default ``<output folder>/features``); ``audio_model`` may
    be a ``tiny:`` spec (smoke runs)."""

    audio_model: str = "tiny:hubert"
    layer: int = -1
    cache_dir: Optional[str] = None


@dataclass
class Model:
    """``architectures``: 1 = CNN+LSTM, 2 = CNN+LSTM+attention; ``per_emotion``: one single-output model per
    emotion (the authors' setup); ``head``: null = 256-64-8 (arch 1) / 256-128-64 (arch 2)."""

    architectures: List[Literal[1, 2]] = field(default_factory=lambda: [1, 2])
    per_emotion: bool = False
    channels: List[int] = field(default_factory=lambda: [32, 24, 16])
    kernel: int = 3
    lstm_hidden: int = 16
    lstm_layers: int = 2
    head: Optional[List[int]] = None
    output_activation: Literal["none", "relu", "sigmoid"] = "none"


@dataclass
class Train(TrainConfig):
    epochs: int = 4
    batch_size: int = 8
    eval_batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    amp: bool = False
    progress: bool = False


@dataclass
class Eval:
    partition: str = "val"


@dataclass
class Config(RecipeConfig):
    """Small defaults: runs on a synthetic compare-share corpus (``sermodels synth --corpus compare-share``) in
    well under a minute."""

    recipe: str = "emotion_share"
    data: Data = field(default_factory=Data)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)

    def check(self) -> None:
        super().check()
        if not 0 < self.data.holdout < 1:
            raise ConfigError(f"data.holdout must be in (0, 1), got {self.data.holdout}")


def run_names(cfg: Config) -> List[str]:
    return []

# Paper 004, Table 1, row "Baseline [16]" (ComParE 2023 devel Spearman rho) and Table 2's baseline mean.
COMPARE_BASELINE = {"Anger": 0.428, "Boredom": 0.545, "Calmness": 0.559, "Concentration": 0.524,
                    "Determination": 0.531, "Excitement": 0.453, "Interest": 0.431, "Sadness": 0.476,
                    "Tiredness": 0.55}
COMPARE_BASELINE_MEAN = 0.500


def _forward(model, batch):
    return model(batch["x"], batch["x_mask"])


def spearman_per_column(pred: np.ndarray, target: np.ndarray) -> List[float]:
    """Spearman rho of each column (NaN for a constant column)."""
    out = []
    for d in range(target.shape[1]):
        if np.ptp(pred[:, d]) == 0 or np.ptp(target[:, d]) == 0:
            out.append(float("nan"))
        else:
            out.append(float(spearmanr(pred[:, d], target[:, d]).statistic))
    return out


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/emotion_share", runs: Optional[Sequence[str]] = None, overwrite: bool = False
        ) -> Dict[str, Any]:
    cfg, info, folder = start_run("emotion_share", Config, config, corpus, data_root, out_dir, overwrite)
    out_dir = str(out_dir)
    utts = [u for u in read_corpus(cfg.data.corpus, cfg.data.root, ratings=False).utterances
            if len(u.shares) == len(EMOTIONS)]
    if not utts:
        raise ValueError(f"no utterance of {cfg.data.corpus} at {cfg.data.root} has the {len(EMOTIONS)} emotion shares "
                         f"this recipe learns ({', '.join(EMOTIONS)}): it needs a ComParE Emotion Share corpus")
    with_shares = split_utterances(utts, cfg.data.corpus, cfg.data.split, cfg.data.partitions,
                                   ("train", cfg.eval.partition), log=say if info.is_main else None)
    fp = data_fingerprint(with_shares, shares={u.utterance_id: u.shares for us in with_shares.values() for u in us},
                          holdout=cfg.data.holdout, holdout_seed=cfg.data.holdout_seed)
    with folder.claim(fp):
        results = _run(cfg, info, out_dir, utts, with_shares)
        folder.save(results, tables(cfg, results))
    return results


def _run(cfg: Config, info, out_dir: str, utts, split) -> Dict[str, Any]:
    fc = cfg.features
    feats = extract_features(utts, encoder_path(fc.audio_model, out_dir), kind="audio", layer=fc.layer,
                             pooling="none", cache_dir=fc.cache_dir or os.path.join(out_dir, "features"),
                             progress=False)
    labelled = {s: [u for u in us if u.utterance_id in feats] for s, us in split.items()}
    rng = np.random.default_rng(cfg.data.holdout_seed)
    train = labelled.get("train", [])
    order = rng.permutation(len(train))
    n_hold = max(1, int(round(cfg.data.holdout * len(train))))
    fit_set, stop_set = [train[i] for i in order[n_hold:]], [train[i] for i in order[:n_hold]]
    evaluate = labelled.get(cfg.eval.partition, [])
    if not fit_set or not evaluate:
        raise ValueError(f"need training and {cfg.eval.partition} utterances with audio features; got {len(fit_set)} "
                         f"and {len(evaluate)}")

    def dataset(us, cols):
        return DictDataset([{"x": torch.as_tensor(feats[u.utterance_id]),
                             "y": torch.tensor([u.shares[EMOTIONS[c]] for c in cols], dtype=torch.float32)}
                            for u in us], [u.utterance_id for u in us])

    in_dim = int(np.asarray(next(iter(feats.values()))).shape[-1])
    truth = np.array([[u.shares[e] for e in EMOTIONS] for u in evaluate])
    mc = {k: v for k, v in vars(cfg.model).items() if k not in ("architectures", "per_emotion")}
    per_seed: Dict[str, List[Dict[str, float]]] = {}
    for arch in cfg.model.architectures:
        groups = [[c] for c in range(len(EMOTIONS))] if cfg.model.per_emotion else [list(range(len(EMOTIONS)))]
        for seed in cfg.seeds:
            pred = np.zeros_like(truth)
            for cols in groups:
                torch.manual_seed(seed)
                model = EmotionShareNet(in_dim, n_outputs=len(cols), attention=arch == 2, **mc)
                name = f"arch{arch}" + (f"_{EMOTIONS[cols[0]]}" if len(cols) == 1 else "")
                Trainer(cfg.train, os.path.join(out_dir, name, f"seed{seed}"), seed=seed, info=info).fit(
                    model, SupervisedTask(_forward, mse_loss), dataset(fit_set, cols), dataset(stop_set, cols),
                    collate_fn=pad_collate)
                pred[:, cols] = predict(model, dataset(evaluate, cols), _forward)
            rho = spearman_per_column(pred, truth)
            per_seed.setdefault(f"Architecture {arch}", []).append(dict(zip(EMOTIONS, rho),
                                                                        mean=float(np.nanmean(rho))))
    rho = {arch: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for arch, rs in per_seed.items()}
    return {"rho": rho, "per_seed": per_seed, "seeds": list(cfg.seeds), "n_eval": len(evaluate),
            "eval_partition": cfg.eval.partition}


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates its own ``eval.partition`` only)."""
    return print_tables("emotion_share", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    model_name = cfg.features.audio_model
    short = [e[:5] for e in EMOTIONS]
    rows = [[model_name if i == 0 else "", arch] + [r[e] for e in EMOTIONS] + [r["mean"]]
            for i, (arch, r) in enumerate(results["rho"].items())]
    rows.append(["Baseline [16] (paper)", ""] + [COMPARE_BASELINE[e] for e in EMOTIONS] + [COMPARE_BASELINE_MEAN])
    t1 = format_table(f"Table 1: Spearman rho per emotion on {results['eval_partition']} (n={results['n_eval']}, "
                      f"mean over seeds {results['seeds']})",
                      ["Features", "Regressor", *short, "mean"], rows)
    b = COMPARE_BASELINE_MEAN
    rows = [[arch, r["mean"], b, f"{100 * (r['mean'] - b) / b:.1f}"]
            for arch, r in results["rho"].items()]
    t2 = format_table("Table 2: mean rho vs the ComParE baseline", ["Regressor", "mean rho (a)", "baseline (b)",
                                                                    "change % 100(a-b)/b"], rows)
    return t1 + "\n\n" + t2
