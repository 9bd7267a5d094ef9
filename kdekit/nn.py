"""``nn.Module`` wrappers of kdekit's functions (thin: the maths lives in :mod:`kdekit.ops` and :mod:`kdekit.labels`)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .labels import points_to_distribution, points_to_distribution_op, pseudo_observations
from .ops._checks import check_reduction, compute_dtype, reduce_loss
from .ops.pooling import probability_table
from .ops.ccc import ccc_loss

__all__ = ["DiffusionKDE2d", "KDECrossEntropyLoss", "CCCLoss"]


class DiffusionKDE2d(nn.Module):
    """Points -> differentiable ``k x k`` distribution (soft histogram -> diffusion KDE -> pooled table).

    ``forward(x, y, mask=None)`` takes points ``(B, N)`` per axis and returns ``(B, k, k)`` probabilities (rows = x).
    With ``n_observations`` set, the points are first upsampled to that many pseudo-observations per item as the
    seed does (:func:`kdekit.pseudo_observations`; random, drawn from ``generator`` when given). The tables are >= 0
    and sum to 1; their gradients are finite for every item (:func:`kdekit.points_to_distribution`). ``out_dtype``:
    e.g. ``torch.float32`` for float16 points (the KDE computes in float32 either way).
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
        out_dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        self.grid, self.k, self.sharpness, self.limits = grid, k, sharpness, limits
        self.n_observations, self.implicit_grad, self.clip_negative = n_observations, implicit_grad, clip_negative
        self.out_dtype = out_dtype

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
                if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                    raise TypeError(f"mask must be a bool tensor (True = valid), got {getattr(mask, 'dtype', mask)!r}")
                ratings = ratings.masked_fill(~mask[..., None], float("nan"))
            obs = pseudo_observations(ratings, self.n_observations, generator)
            x, y, mask = obs[..., 0], obs[..., 1], None
        if torch.compiler.is_compiling():  # one opaque op: the per-item bandwidth rules branch on data
            limits = self._compile_limits()
            probs = points_to_distribution_op(x, y, mask, self.k, self.grid, float(self.sharpness), limits,
                                              self.implicit_grad, self.clip_negative)
            return probs if self.out_dtype is None else probs.to(self.out_dtype)
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
            out_dtype=self.out_dtype,
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
    """Soft-target cross-entropy ``-sum target * log(pred + eps)`` of each ``(B, k, k)`` table (the seed's training
    loss), reduced over the batch by ``reduction`` (``"mean"`` | ``"sum"`` | ``"none"``).

    ``pred`` is first made a probability table (negatives count as 0, each item divided by its total:
    :func:`kdekit.ops.pooling.probability_table`), so the loss is finite for every finite ``pred``; ``eps`` (1e-8,
    the seed's) bounds ``log`` at empty cells and the gradient at ``1 / eps``; for float16 ``pred`` it is raised to
    float16's smallest normal number (6.1e-5), so the gradient into the float16 table stays finite (use
    ``out_dtype=torch.float32`` on the KDE to keep 1e-8). Computed in the inputs' dtype (float16/bfloat16 in float32)
    and returned in ``pred``'s dtype.
    """

    def __init__(self, eps: float = 1e-8, reduction: str = "mean"):
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps, self.reduction = eps, check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"target has shape {tuple(target.shape)} but pred has shape {tuple(pred.shape)}")
        ct = compute_dtype(pred.dtype)
        p = probability_table(pred.flatten(1).to(ct), dims=(-1,))
        eps = max(self.eps, torch.finfo(torch.float16).tiny) if pred.dtype == torch.float16 else self.eps
        loss = -(target.flatten(1).to(ct) * torch.log(p + eps)).sum(1)
        return reduce_loss(loss, self.reduction).to(pred.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}"


class CCCLoss(nn.Module):
    """``1 - CCC`` (:func:`kdekit.ccc_loss`; population moments unless ``unbiased``) along ``dim`` (default 0: the
    samples, one CCC per output column), reduced over the remaining dims by ``reduction``."""

    def __init__(self, dim=0, unbiased: bool = False, reduction: str = "mean"):
        super().__init__()
        self.dim, self.unbiased, self.reduction = dim, unbiased, check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return ccc_loss(pred, target, dim=self.dim, mask=mask, unbiased=self.unbiased, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unbiased={self.unbiased}, reduction={self.reduction!r}"
