"""Recipe: ComParE 2023 Emotion Share with CNN+LSTM(+attention) on SSL features (Mohapatra et al., ACM MM 2023;
paper 004).

Features: frames of one layer (``features.layer``, the paper: the last) of each model of ``features.audio_model``: one
spec or a list of them, the feature-set rows of Table 1 (hub ids or folders, ``tiny:`` random-init models, or the
built-in ``fbank40``: the paper's 40-d mel filterbank baseline, 0-8000 Hz, 25 ms window; ``mfcc``, ``logmel``). Each
utterance keeps its own length; batches are zero-padded with masks (no fixed 398/199 frames).
Models: :class:`~sermodels.models.emotion_share.EmotionShareNet`, Architecture 1 (CNN+LSTM) and/or 2 (+attention,
scaled by ``W_l`` as the paper's eq. 2b, ``model.attention_scale: sqrt_width`` = the authors' code)
(``model.architectures``). ``model.per_emotion: true`` (the paper: "the emotion regression network is different for
all the emotions and they are trained separately"; the paper config's setting) trains one single-output model per
emotion; ``false`` (the small defaults) one 9-output model. Loss MSE, Adam. Early stopping uses ``data.holdout`` of the
training partition; results are reported on
``eval.partition`` (``val`` = the ComParE devel partition, as the paper's tables; the official test labels are
blank), as the mean over ``seeds`` of each seed's Spearman rho.

Output: Table 1 (Spearman rho per emotion and the mean, one row per feature set x architecture, the ComParE baseline
row quoted from the paper), Table 2 (per feature set, the mean rho of its better architecture and the percentage
change against the baseline's 0.500), Figure 2 (``scatter.png``: predicted vs true share per emotion on
``eval.partition`` for the row with the highest mean rho, first seed; data in ``scatter.csv``) and Figure 3
(``architectures.png``: mean rho of Architecture 1 vs 2 per feature set). ``configs/emotion_share_paper.yaml``
holds the paper's protocol key by key.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

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
from ._common import (DictDataset, SupervisedTask, display_name, encoder_path, format_table, model_list, pad_collate,
                      predict, print_tables, read_corpus, split_utterances, start_run)

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
    """Frames of layer ``layer`` of ``audio_model``: one model or a list of them (Table 1's feature-set rows; a hub id
    or folder, a ``tiny:`` spec, or ``fbank40`` / ``mfcc`` / ``logmel``), cached in ``cache_dir`` (default
    ``<output folder>/features``)."""

    audio_model: Union[str, List[str]] = "tiny:hubert"
    layer: int = -1
    cache_dir: Optional[str] = None


@dataclass
class Model:
    """``architectures``: 1 = CNN+LSTM, 2 = CNN+LSTM+attention; ``per_emotion``: one single-output model per
    emotion (the paper, ``configs/emotion_share_paper.yaml``), else one 9-output model (these small defaults: nine
    times fewer models to train); ``head``: null = 256-64-8 (arch 1) / 256-128-64 (arch 2); ``attention_scale``:
    ``width`` (divide Q K^T by W_l, the paper's eq. 2b) or ``sqrt_width`` (the authors' code)."""

    architectures: List[Literal[1, 2]] = field(default_factory=lambda: [1, 2])
    per_emotion: bool = False
    channels: List[int] = field(default_factory=lambda: [32, 24, 16])
    kernel: int = 3
    lstm_hidden: int = 16
    lstm_layers: int = 2
    head: Optional[List[int]] = None
    output_activation: Literal["none", "relu", "sigmoid"] = "none"
    attention_scale: Literal["width", "sqrt_width"] = "width"


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
        model_list(self.features.audio_model)


def run_names(cfg: Config) -> List[str]:
    return []

# Paper 004, Table 1, row "Baseline [16]" (ComParE 2023 devel Spearman rho) and Table 2's baseline mean.
COMPARE_BASELINE = {"Anger": 0.428, "Boredom": 0.545, "Calmness": 0.559, "Concentration": 0.524,
                    "Determination": 0.531, "Excitement": 0.453, "Interest": 0.431, "Sadness": 0.476,
                    "Tiredness": 0.55}
COMPARE_BASELINE_MEAN = 0.500
# Table 1's names of the feature sets (the paper names no checkpoint; these are the hub ports of torchaudio's
# WAV2VEC2_BASE / WAV2VEC2_LARGE / HUBERT_BASE / HUBERT_LARGE pipelines, the authors' feature extractor).
FEATURE_NAMES = {"facebook/wav2vec2-base": "wav2vec2.0 (Base)", "facebook/wav2vec2-large": "wav2vec2.0 (Large)",
                 "facebook/hubert-base-ls960": "HuBERT (Base)", "facebook/hubert-large-ll60k": "HuBERT (Large)",
                 "fbank40": "Acoustic features (40-d fbank)", "mfcc": "MFCC features", "logmel": "log-mel (80-d)"}


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
        if info.is_main:
            for path in figures(cfg, results, out_dir):
                say(f"wrote {path}")
    return results


def _row(name: str, arch: int) -> str:
    return f"{name}, Architecture {arch}"


def _run(cfg: Config, info, out_dir: str, utts, split) -> Dict[str, Any]:
    fc = cfg.features
    specs = model_list(fc.audio_model)
    names = [display_name(spec, FEATURE_NAMES) for spec in specs]
    rng = np.random.default_rng(cfg.data.holdout_seed)
    train_all = split.get("train", [])
    order = rng.permutation(len(train_all))
    n_hold = max(1, int(round(cfg.data.holdout * len(train_all))))
    hold = {train_all[i].utterance_id for i in order[:n_hold]}
    mc = {k: v for k, v in vars(cfg.model).items() if k not in ("architectures", "per_emotion")}
    groups = [[c] for c in range(len(EMOTIONS))] if cfg.model.per_emotion else [list(range(len(EMOTIONS)))]
    per_seed: Dict[str, List[Dict[str, float]]] = {}
    rows: List[Dict[str, Any]] = []
    first_seed_pred: Dict[str, np.ndarray] = {}
    eval_ids: Dict[str, List[str]] = {}
    evaluate: list = []
    for spec, name in zip(specs, names):
        feats = extract_features(utts, encoder_path(spec, out_dir), kind="audio", layer=fc.layer, pooling="none",
                                 cache_dir=fc.cache_dir or os.path.join(out_dir, "features"), progress=False)
        train = [u for u in train_all if u.utterance_id in feats]
        fit_set = [u for u in train if u.utterance_id not in hold]
        stop_set = [u for u in train if u.utterance_id in hold]
        evaluate = [u for u in split.get(cfg.eval.partition, []) if u.utterance_id in feats]
        if not fit_set or not stop_set or not evaluate:
            raise ValueError(f"{name}: need training, held-out and {cfg.eval.partition} utterances with audio "
                             f"features; got {len(fit_set)}, {len(stop_set)} and {len(evaluate)}")

        def dataset(us, cols):
            return DictDataset([{"x": torch.as_tensor(feats[u.utterance_id]),
                                 "y": torch.tensor([u.shares[EMOTIONS[c]] for c in cols], dtype=torch.float32)}
                                for u in us], [u.utterance_id for u in us])

        in_dim = int(np.asarray(next(iter(feats.values()))).shape[-1])
        truth = np.array([[u.shares[e] for e in EMOTIONS] for u in evaluate])
        folder = "" if len(specs) == 1 else f"features{specs.index(spec)}_"
        for arch in cfg.model.architectures:
            key = _row(name, arch)
            rows.append({"key": key, "features": name, "model": spec, "architecture": arch})
            for seed in cfg.seeds:
                pred = np.zeros_like(truth)
                for cols in groups:
                    torch.manual_seed(seed)
                    model = EmotionShareNet(in_dim, n_outputs=len(cols), attention=arch == 2, **mc)
                    run = f"{folder}arch{arch}" + (f"_{EMOTIONS[cols[0]]}" if len(cols) == 1 else "")
                    Trainer(cfg.train, os.path.join(out_dir, run, f"seed{seed}"), seed=seed, info=info).fit(
                        model, SupervisedTask(_forward, mse_loss), dataset(fit_set, cols), dataset(stop_set, cols),
                        collate_fn=pad_collate)
                    pred[:, cols] = predict(model, dataset(evaluate, cols), _forward)
                rho = spearman_per_column(pred, truth)
                per_seed.setdefault(key, []).append(dict(zip(EMOTIONS, rho), mean=float(np.nanmean(rho))))
                first_seed_pred.setdefault(key, pred)
                eval_ids[key] = [u.utterance_id for u in evaluate]
    rho = {key: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for key, rs in per_seed.items()}
    results: Dict[str, Any] = {"rho": rho, "rows": rows, "per_seed": per_seed, "seeds": list(cfg.seeds),
                               "n_eval": len(evaluate), "eval_partition": cfg.eval.partition}
    best = max(rho, key=lambda k: rho[k]["mean"] if rho[k]["mean"] == rho[k]["mean"] else -np.inf)
    if info.is_main:  # Figure 2's data: the best row's first-seed predictions on the evaluated partition
        truth = {u.utterance_id: u for u in split.get(cfg.eval.partition, [])}
        with open(Path(out_dir) / "scatter.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["utterance_id", "emotion", "true", "predicted"])
            for i, uid in enumerate(eval_ids[best]):
                for j, e in enumerate(EMOTIONS):
                    w.writerow([uid, e, f"{truth[uid].shares[e]:.6g}", f"{first_seed_pred[best][i, j]:.6g}"])
    results["scatter"] = {"row": best, "seed": cfg.seeds[0], "file": "scatter.csv"}
    return results


def figures(cfg: Config, results: Dict[str, Any], run_dir, out=None) -> List[Path]:
    """Figure 2 (``scatter.png``: predicted vs true share per emotion, y = x line, the best row) and Figure 3
    (``architectures.png``: mean rho of Architecture 1 vs 2 per feature set) into ``out`` (default ``run_dir``)."""
    from ..plots import pyplot

    plt = pyplot()
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    written = []
    data: Dict[str, List[List[float]]] = {e: [[], []] for e in EMOTIONS}
    scatter = results.get("scatter")
    if scatter and (run_dir / scatter["file"]).is_file():
        with open(run_dir / scatter["file"], newline="") as f:
            for row in csv.DictReader(f):
                data[row["emotion"]][0].append(float(row["true"]))
                data[row["emotion"]][1].append(float(row["predicted"]))
        fig, axes = plt.subplots(3, 3, figsize=(9, 9))
        for ax, e in zip(axes.flat, EMOTIONS):
            t, p = data[e]
            ax.scatter(t, p, s=6, alpha=0.6)
            lim = [0.0, max([1.0, *t, *p])]
            ax.plot(lim, lim, color="k", linewidth=1)
            ax.set_title(f"{e} (rho {results['rho'][scatter['row']][e]:.2f})", fontsize=9)
            ax.set_xlabel("true share", fontsize=8)
            ax.set_ylabel("predicted share", fontsize=8)
        fig.suptitle(f"Figure 2: {scatter['row']}, {results['eval_partition']}, seed {scatter['seed']}", fontsize=10)
        fig.tight_layout()
        written.append(out / "scatter.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    rows = results.get("rows", [])
    sets = list(dict.fromkeys(r["features"] for r in rows))
    archs = sorted({r["architecture"] for r in rows})
    if sets and archs:
        fig, ax = plt.subplots(figsize=(1.8 * len(sets) + 2, 3.5))
        width = 0.8 / len(archs)
        for j, arch in enumerate(archs):
            means = [results["rho"].get(_row(name, arch), {}).get("mean", np.nan) for name in sets]
            ax.bar(np.arange(len(sets)) + j * width, means, width, label=f"Architecture {arch}")
        ax.set_xticks(np.arange(len(sets)) + width * (len(archs) - 1) / 2, sets, fontsize=7, rotation=15)
        ax.set_ylabel("average Spearman rho")
        ax.set_title("Figure 3: Architecture 1 (CNN+LSTM) vs 2 (+attention)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "architectures.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates its own ``eval.partition`` only)."""
    return print_tables("emotion_share", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    """Tables 1 and 2 of paper 004 from ``results`` (see the module docstring)."""
    short = [e[:5] for e in EMOTIONS]
    rows_meta = results.get("rows") or [{"key": k, "features": cfg.features.audio_model, "architecture": k}
                                        for k in results["rho"]]
    rows, previous = [], None
    for r in rows_meta:
        rho = results["rho"][r["key"]]
        rows.append([r["features"] if r["features"] != previous else "", f"Architecture {r['architecture']}"]
                    + [rho[e] for e in EMOTIONS] + [rho["mean"]])
        previous = r["features"]
    rows.append(["Baseline [16] (paper)", ""] + [COMPARE_BASELINE[e] for e in EMOTIONS] + [COMPARE_BASELINE_MEAN])
    t1 = format_table(f"Table 1: Spearman rho per emotion on {results['eval_partition']} (n={results['n_eval']}, "
                      f"mean over seeds {results['seeds']}; "
                      f"{'one model per emotion' if cfg.model.per_emotion else 'one 9-output model'})",
                      ["Features", "Regressor", *short, "mean"], rows)
    b = COMPARE_BASELINE_MEAN
    rows = []
    for name in dict.fromkeys(r["features"] for r in rows_meta):
        mine = [r for r in rows_meta if r["features"] == name]
        best = max(mine, key=lambda r: results["rho"][r["key"]]["mean"])
        a = results["rho"][best["key"]]["mean"]
        rows.append([name, f"Architecture {best['architecture']}", a, b, f"{100 * (a - b) / b:.1f}"])
    t2 = format_table("Table 2: average rho per feature set (its better architecture) vs the ComParE baseline",
                      ["Features", "Regressor", "Average rho (a)", "Baseline (b)", "change % 100(a-b)/b"], rows)
    figs = f"Figure 2: {results['scatter']['file'].replace('.csv', '.png')} (row {results['scatter']['row']}); " \
           "Figure 3: architectures.png" if results.get("scatter") else ""
    return t1 + "\n\n" + t2 + ("\n\n" + figs if figs else "")
