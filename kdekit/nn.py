"""``nn.Module`` wrappers of kdekit's functions (thin: the maths lives in :mod:`kdekit.ops` and :mod:`kdekit.labels`)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .labels import points_to_distribution, points_to_distribution_op, pseudo_observations
from .ops._utils import compute_dtype
from .ops.ccc import ccc_loss

__all__ = ["DiffusionKDE2d", "KDECrossEntropyLoss", "CCCLoss"]


class DiffusionKDE2d(nn.Module):
    """Points -> differentiable ``k x k`` distribution (soft histogram -> diffusion KDE -> pooled table).

    ``forward(x, y, mask=None)`` takes points ``(B, N)`` per axis and returns ``(B, k, k)`` probabilities (rows = x).
    With ``n_observations`` set, the points are first upsampled to that many pseudo-observations per item as the
    seed does (:func:`kdekit.pseudo_observations`; random, drawn from ``generator`` when given).
    """

    def __init__(
        self,
        grid: int = 64,
        k: int = 4,
        sharpness: float = 8.0,
        limits=((-1.0, 1.0), (-1.0, 1.0)),
        n_observations: Optional[int] = None,
        implicit_grad: bool = True,
        clip_negative: bool = False,
    ):
        super().__init__()
        self.grid, self.k, self.sharpness, self.limits = grid, k, sharpness, limits
        self.n_observations, self.implicit_grad, self.clip_negative = n_observations, implicit_grad, clip_negative

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        if self.n_observations is not None:
            ratings = torch.stack([x, y], -1)
            if mask is not None:
                ratings = ratings.masked_fill(~mask.bool()[..., None], float("nan"))
            obs = pseudo_observations(ratings, self.n_observations, generator)
            x, y, mask = obs[..., 0], obs[..., 1], None
        if torch.compiler.is_compiling():  # one opaque op: the per-item bandwidth rules branch on data
            limits = self._compile_limits()
            return points_to_distribution_op(x, y, mask, self.k, self.grid, float(self.sharpness), limits,
                                             self.implicit_grad, self.clip_negative)
        return points_to_distribution(
            x,
            y,
            k=self.k,
            grid=self.grid,
            sharpness=self.sharpness,
            limits=self.limits,
            mask=mask,
            implicit_grad=self.implicit_grad,
            clip_negative=self.clip_negative,
        ).probs

    def _compile_limits(self):
        """``limits`` as the custom op takes them: None (data range +- 1/4) or ``[x_lo, x_hi, y_lo, y_hi]``."""
        if self.limits is None:
            return None
        try:
            (x_lo, x_hi), (y_lo, y_hi) = self.limits
            return [float(x_lo), float(x_hi), float(y_lo), float(y_hi)]
        except (TypeError, ValueError):
            raise ValueError("under torch.compile, DiffusionKDE2d needs limits=None or ((x_lo, x_hi), (y_lo, y_hi)) "
                             f"numbers, got {self.limits!r}") from None

    def extra_repr(self) -> str:
        return f"grid={self.grid}, k={self.k}, sharpness={self.sharpness}, n_observations={self.n_observations}"


class KDECrossEntropyLoss(nn.Module):
    """Soft-target cross-entropy ``mean_b(-sum target * log(pred + eps))`` between ``(B, k, k)`` tables.

    ``pred`` is renormalised to sum to 1 per item before the ``eps`` (1e-8, the seed's) is added. Computed in the
    inputs' dtype (float16/bfloat16 in float32) and returned in ``pred``'s dtype.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"target has shape {tuple(target.shape)} but pred has shape {tuple(pred.shape)}")
        ct = compute_dtype(pred.dtype)
        p = pred.flatten(1).to(ct)
        p = p / p.sum(1, keepdim=True)
        return -(target.flatten(1).to(ct) * torch.log(p + self.eps)).sum(1).mean().to(pred.dtype)


class CCCLoss(nn.Module):
    """``1 - CCC`` (:func:`kdekit.ccc_loss`) reduced over ``dim``, averaged over the remaining dims."""

    def __init__(self, dim: int = -1, unbiased: bool = False):
        super().__init__()
        self.dim, self.unbiased = dim, unbiased

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return ccc_loss(pred, target, dim=self.dim, mask=mask, unbiased=self.unbiased).mean()
