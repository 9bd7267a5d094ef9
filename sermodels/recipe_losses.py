"""Regression losses of the recipe papers: MSE, MAE, log-cosh (word-embedding targets) and the CCC loss.

Every loss takes ``pred`` and ``target`` of the same shape ``(..., D)`` and returns a scalar in the input dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import kdekit

_LOG2 = math.log(2.0)


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() == 0:
            raise TypeError(f"{name} must be a floating tensor with at least one dim, got {t!r:.60}")
    if (pred.shape, pred.dtype, pred.device) != (target.shape, target.dtype, target.device):
        raise ValueError(f"target has shape {tuple(target.shape)}, {target.dtype} on {target.device} but pred has "
                         f"shape {tuple(pred.shape)}, {pred.dtype} on {pred.device}")
    if pred.numel() == 0:
        raise ValueError(f"pred is empty (shape {tuple(pred.shape)})")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over every element of ``(pred - target)**2`` (paper 001, eq. 1)."""
    _check(pred, target)
    return F.mse_loss(pred, target)


def mae_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over every element of ``|pred - target|`` (paper 001, eq. 2)."""
    _check(pred, target)
    return F.l1_loss(pred, target)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """Element-wise ``log(cosh(x))``, finite for every finite ``x`` and accurate to a few ulp relative.

    ``|x| > 1``: ``|x| + softplus(-2|x|) - log 2`` (``cosh`` itself overflows float32 beyond 89; this tends to
    ``|x| - log 2``). ``|x| <= 1``: ``log1p(2 sinh(x/2)**2)`` (= log cosh x), which keeps full relative precision
    near 0 where the first form cancels (log cosh x ~ x**2 / 2). The gradient is ``tanh(x)`` on both branches.
    """
    a = x.abs()
    small = a <= 1.0
    a_small = torch.where(small, a, torch.zeros_like(a))
    a_large = torch.where(small, torch.ones_like(a), a)
    near = torch.log1p(2.0 * torch.sinh(0.5 * a_small) ** 2)
    far = a_large + F.softplus(-2.0 * a_large) - _LOG2
    return torch.where(small, near, far)


def log_cosh_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over every element of ``log(cosh(pred - target))`` (paper 001, eq. 3), numerically stable."""
    _check(pred, target)
    return log_cosh(pred - target).mean()


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """``mean_d (1 - CCC_d)`` over the columns of ``(N, D)`` predictions (paper 002: D = 3, arousal/valence/dominance;
    paper 003: D = 2, activation/valence), CCC from :func:`kdekit.ccc` along the samples (population moments
    by default, ``unbiased=True`` for ddof 1). A 1-D input is one column."""
    _check(pred, target)
    if pred.dim() == 1:
        pred, target = pred.unsqueeze(-1), target.unsqueeze(-1)
    return kdekit.ccc_loss(pred, target, dim=0, unbiased=unbiased)


LOSSES = {"mse": mse_loss, "mae": mae_loss, "logcosh": log_cosh_loss, "ccc": ccc_loss}


def get_loss(name: str):
    """The loss function called ``name`` (one of ``LOSSES``); ValueError naming the choices otherwise."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
