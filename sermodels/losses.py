"""Losses of the individual-annotator recipe (Tavernor et al., IS 2024), built on kdekit.

Shapes: per-annotator predictions and ratings ``(B, M, 2)`` in ``[activation, valence]`` order with NaN where an
utterance has no rating in that column (padding); distribution targets ``(B, k, k)`` (rows = activation), each
summing to 1.

- :func:`annotator_ccc_loss` (Task 1): ``2 - CCC_act - CCC_val``, each CCC over every valid (utterance, annotator)
  pair of the batch (``kdekit.ccc`` with a mask).
- :func:`predicted_distribution`: per-annotator predictions -> ``n_pseudo`` pseudo-observations per utterance (the
  labels' upsampling: means of random non-empty annotator subsets + uniform noise, ``kdekit.pseudo_observations``)
  -> diffusion KDE on ``[-1, 1]^2`` with a soft (DiffKDE, differentiable, ``kdekit.points_to_distribution``) or a
  hard histogram (``kdekit.labels_from_ratings``, the targets' own pipeline) -> k x k probabilities.
- :func:`diffkde_loss` (Task 2): cross-entropy ``-sum target * log(p + 1e-8)`` of that distribution, averaged
  over utterances.
- :func:`baseline_loss`: soft-target cross-entropy of the baseline's ``k * k`` logits.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

import kdekit

EPS = 1e-8


def _check_pairs(pred: torch.Tensor, ratings: torch.Tensor) -> None:
    if pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred must have shape (B, M, 2), got {tuple(pred.shape)}")
    if ratings.shape != pred.shape:
        raise ValueError(f"ratings has shape {tuple(ratings.shape)} but pred has shape {tuple(pred.shape)}")


def _check_targets(target: torch.Tensor, batch: int) -> int:
    if target.dim() != 3 or target.shape[0] != batch or target.shape[1] != target.shape[2]:
        raise ValueError(f"target must have shape ({batch}, k, k), got {tuple(target.shape)}")
    return target.shape[1]


def annotator_ccc_loss(pred: torch.Tensor, ratings: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Task 1: ``sum over dims of (1 - CCC)`` over the valid (utterance, annotator) pairs; NaN if < 2 pairs."""
    _check_pairs(pred, ratings)
    mask = ~(torch.isnan(ratings) | torch.isnan(pred))
    c = kdekit.ccc(pred.reshape(-1, 2), ratings.reshape(-1, 2).to(pred.dtype), dim=0, mask=mask.reshape(-1, 2),
                   unbiased=unbiased)
    return (1.0 - c).sum()


def predicted_distribution(pred: torch.Tensor, k: int = 4, *, histogram: str = "soft", grid: int = 64,
                           sharpness: float = 8.0, n_pseudo: int = 200, dtype: Optional[torch.dtype] = None,
                           generator: Optional[torch.Generator] = None, seed: Optional[int] = None
                           ) -> torch.Tensor:
    """``(B, M, 2)`` per-annotator predictions (NaN = no annotator) -> ``(B, k, k)`` probabilities.

    ``histogram="soft"``: ``kdekit.pseudo_observations`` then ``kdekit.points_to_distribution`` (soft histogram with
    ``sharpness``, diffusion KDE on a ``grid`` over ``[-1, 1]^2``), differentiable, computed in ``dtype`` (float16 on
    GPU for training as in the paper; kdekit accumulates half precision in float32). ``histogram="hard"``:
    ``kdekit.labels_from_ratings`` on the predictions, i.e. exactly the pipeline of the targets (hard histogram,
    float64, not differentiable). Negative KDE values are clipped to eps as in the authors' code. ``generator``
    (on ``pred``'s device) draws the pseudo-observations; None = the global RNG. ``seed`` instead: each utterance's
    draws come from a generator seeded with ``seed`` over its own annotators only (NaN columns dropped), so its table
    does not depend on the rest of the batch (evaluation, prediction). Returns ``pred``'s dtype.
    """
    if pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred must have shape (B, M, 2), got {tuple(pred.shape)}")
    if histogram not in ("soft", "hard"):
        raise ValueError(f"histogram must be 'soft' or 'hard', got {histogram!r}")
    if seed is not None:
        if generator is not None:
            raise ValueError("pass generator or seed, not both")
        rows = []
        for row in pred:
            keep = torch.isfinite(row).all(-1)
            gen = torch.Generator(device=pred.device).manual_seed(int(seed))
            rows.append(predicted_distribution((row[keep] if keep.any() else row[:1])[None], k, histogram=histogram,
                                               grid=grid, sharpness=sharpness, n_pseudo=n_pseudo, dtype=dtype,
                                               generator=gen))
        return torch.cat(rows) if rows else pred.new_zeros((0, k, k))
    if histogram == "hard":
        return kdekit.labels_from_ratings(pred.detach(), k=k, grid=grid, n_observations=n_pseudo,
                                          generator=generator, clip_negative=True).probs.to(pred.dtype)
    obs = kdekit.pseudo_observations(pred if dtype is None else pred.to(dtype), n=n_pseudo, generator=generator)
    valid = torch.isfinite(obs).all(-1)
    x = torch.where(valid, obs[..., 0], 0.0)
    y = torch.where(valid, obs[..., 1], 0.0)
    probs = kdekit.points_to_distribution(x, y, k=k, grid=grid, sharpness=sharpness, mask=valid,
                                          clip_negative=True).probs
    return probs.to(pred.dtype)


def distribution_cross_entropy(dist: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-utterance ``-sum target * log(dist + eps)`` ``(B,)`` for ``(B, k, k)`` tables."""
    _check_targets(target, dist.shape[0])
    if dist.shape != target.shape:
        raise ValueError(f"dist has shape {tuple(dist.shape)} but target has shape {tuple(target.shape)}")
    return -(target.to(dist.dtype) * torch.log(dist + eps)).sum(dim=(-2, -1))


def diffkde_loss(pred: torch.Tensor, target: torch.Tensor, k: Optional[int] = None, **kde) -> torch.Tensor:
    """Task 2: mean over utterances of the cross-entropy of :func:`predicted_distribution` against ``target``.

    ``kde`` holds :func:`predicted_distribution`'s keyword arguments (``histogram``, ``grid``, ``sharpness``,
    ``n_pseudo``, ``dtype``, ``generator``); ``k`` defaults to the target's.
    """
    k_target = _check_targets(target, pred.shape[0])
    if k is not None and k != k_target:
        raise ValueError(f"k={k} but target tables are {k_target}x{k_target}")
    return distribution_cross_entropy(predicted_distribution(pred, k_target, **kde), target).mean()


def baseline_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean soft-target cross-entropy of ``(B, k*k)`` logits against ``(B, k, k)`` targets (row-major)."""
    k = _check_targets(target, logits.shape[0])
    if logits.dim() != 2 or logits.shape[1] != k * k:
        raise ValueError(f"logits must have shape ({logits.shape[0]}, {k * k}), got {tuple(logits.shape)}")
    return -(target.reshape(-1, k * k).to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
