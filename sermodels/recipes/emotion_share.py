"""Recipe: ComParE 2023 Emotion Share with CNN+LSTM(+attention) on SSL features (Mohapatra et al., ACM MM 2023;
paper 004).

Features: frames of one SSL layer (``features.audio_model``, ``features.layer``; the paper's best is HuBERT-large,
last layer), each utterance at its own length; batches are zero-padded with masks (no fixed 398/199 frames).
Models: :class:`~sermodels.models.emotion_share.EmotionShareNet`, Architecture 1 (``attention: false``) and/or 2.
``per_emotion: true`` trains one single-output model per emotion (the authors' scripts), otherwise one 9-output
model. Loss MSE, Adam. Early stopping uses ``holdout`` of the training partition; results are reported on
``eval_split`` (``val`` = the ComParE devel partition, as the paper's tables; the official test labels are blank).

Output: Table 1 (Spearman rho per emotion and the mean, one row per architecture, the ComParE baseline row quoted
from the paper) and Table 2 (mean rho and percentage change against the baseline's 0.500).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np
import torch
from scipy.stats import spearmanr

from ..data import load_corpus
from ..data.compare_share import EMOTIONS
from ..data.features import extract_features
from ..data.splits import assign_split
from ..models.emotion_share import EmotionShareNet
from ..recipe_losses import mse_loss
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, dist_info, encoder_path, format_table, pad_collate, predict,
                      recipe_config, save_results, trainer_config)

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


def run(config: Dict[str, Any], corpus: str, data_root: str, out_dir: str) -> Dict[str, Any]:
    cfg = recipe_config("emotion_share", config)
    info = dist_info(cfg)
    os.makedirs(out_dir, exist_ok=True)
    utts = [u for u in load_corpus(corpus, data_root).utterances]
    split = assign_split(utts, corpus, cfg["split_scheme"])
    fc = cfg["features"]
    feats = extract_features(utts, encoder_path(fc["audio_model"], out_dir), kind="audio", layer=fc["layer"],
                             pooling="none", cache_dir=fc.get("cache_dir") or os.path.join(out_dir, "features"),
                             progress=False)
    labelled = {s: [u for u in us if u.utterance_id in feats and len(u.shares) == len(EMOTIONS)]
                for s, us in split.items()}
    rng = np.random.default_rng(cfg["seed"])
    train = labelled["train"]
    order = rng.permutation(len(train))
    n_hold = max(1, int(round(cfg["holdout"] * len(train))))
    fit_set, stop_set = [train[i] for i in order[n_hold:]], [train[i] for i in order[:n_hold]]
    evaluate = labelled[cfg["eval_split"]]
    if not fit_set or not evaluate:
        raise ValueError(f"need labelled training and {cfg['eval_split']} utterances; got {len(fit_set)} and "
                         f"{len(evaluate)}")

    def dataset(us, cols):
        return DictDataset([{"x": torch.as_tensor(feats[u.utterance_id]),
                             "y": torch.tensor([u.shares[EMOTIONS[c]] for c in cols], dtype=torch.float32)}
                            for u in us], [u.utterance_id for u in us])

    in_dim = int(np.asarray(next(iter(feats.values()))).shape[-1])
    truth = np.array([[u.shares[e] for e in EMOTIONS] for u in evaluate])
    results: Dict[str, Any] = {"rho": {}, "n_eval": len(evaluate), "eval_split": cfg["eval_split"]}
    for arch in cfg["architectures"]:
        groups = [[c] for c in range(len(EMOTIONS))] if cfg["per_emotion"] else [list(range(len(EMOTIONS)))]
        pred = np.zeros_like(truth)
        for cols in groups:
            torch.manual_seed(cfg["seed"])
            model = EmotionShareNet(in_dim, n_outputs=len(cols), attention=arch == 2, **cfg["model"])
            name = f"arch{arch}" + (f"_{EMOTIONS[cols[0]]}" if len(cols) == 1 else "")
            Trainer(trainer_config(cfg, os.path.join(out_dir, name), seed=cfg["seed"]), info=info).fit(
                model, SupervisedTask(_forward, mse_loss), dataset(fit_set, cols), dataset(stop_set, cols),
                collate_fn=pad_collate)
            pred[:, cols] = predict(model, dataset(evaluate, cols), _forward)
        rho = spearman_per_column(pred, truth)
        results["rho"][f"Architecture {arch}"] = dict(zip(EMOTIONS, rho), mean=float(np.nanmean(rho)))
    table = tables(results, fc["audio_model"])
    save_results(out_dir, results, table, info)
    return results


def tables(results: Dict[str, Any], model_name: str) -> str:
    short = [e[:5] for e in EMOTIONS]
    rows = [[model_name if i == 0 else "", arch] + [r[e] for e in EMOTIONS] + [r["mean"]]
            for i, (arch, r) in enumerate(results["rho"].items())]
    rows.append(["Baseline [16] (paper)", ""] + [COMPARE_BASELINE[e] for e in EMOTIONS] + [COMPARE_BASELINE_MEAN])
    t1 = format_table(f"Table 1: Spearman rho per emotion on {results['eval_split']} (n={results['n_eval']})",
                      ["Features", "Regressor", *short, "mean"], rows)
    b = COMPARE_BASELINE_MEAN
    rows = [[arch, r["mean"], b, f"{100 * (r['mean'] - b) / b:.1f}"]
            for arch, r in results["rho"].items()]
    t2 = format_table("Table 2: mean rho vs the ComParE baseline", ["Regressor", "mean rho (a)", "baseline (b)",
                                                                    "change % 100(a-b)/b"], rows)
    return t1 + "\n\n" + t2
