"""Pool a density grid into a coarse probability grid: equal block sums divided by the item's total.

``pool_density(density (..., n, m), k)`` splits each axis into ``k`` equal blocks (``n / k`` x ``m / k`` cells each;
``k`` must divide ``n`` and ``m``) and returns the ``(..., k, k)`` block sums divided by the item's total, so every
item sums to 1 (the seed's 4x4 "probability grid": block means over ``linspace(0, n, k + 1)`` edges, divided by their
sum; with equal blocks means and sums give the same result). Negative density values (Gibbs lobes of an unclipped
KDE) are summed as they are. An item whose total is exactly 0 returns all zeros instead of NaN.

float16/bfloat16 inputs are summed in float32 and returned in the input dtype. Differentiable (plain torch ops).
"""
from __future__ import annotations

import math

import torch

from ._checks import check_float_tensor, compute_dtype
from ._reduction import normalize_per_item


def _check_blocks(k, sizes, shape) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for size in sizes:
        if size % k != 0:
            raise ValueError(f"k={k} must divide the grid size {size} (density shape {tuple(shape)})")
    return k


def probability_table(blocks: torch.Tensor, dims=(-2, -1)) -> torch.Tensor:
    """Block masses as probabilities: negatives (Gibbs lobes of a KDE, float32 rounding: down to ~-1e-7) clamped to 0,
    then divided by the item's total over ``dims``, so every table is >= 0 and sums to 1 (all zeros: uniform)."""
    p = blocks.to(compute_dtype(blocks.dtype)).clamp_min(0)
    total = p.sum(dim=dims, keepdim=True)
    uniform = 1.0 / math.prod([p.shape[d] for d in dims])
    return torch.where(total > 0, p / torch.where(total > 0, total, 1), uniform).to(blocks.dtype)


def pool_density(density: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n, m)`` density -> ``(..., k, k)`` probabilities (block sums / item total); ``k`` divides n and m.

    Example:
        >>> import torch
        >>> from kdekit import pool_density
        >>> density = torch.arange(16.0).reshape(4, 4)  # total 120
        >>> pool_density(density, 2)  # 2 x 2 blocks: (0 + 1 + 4 + 5) / 120, ...
        tensor([[0.0833, 0.1500],
                [0.3500, 0.4167]])
    """
    check_float_tensor("density", density, min_ndim=2)
    *lead, n, m = density.shape
    _check_blocks(k, (n, m), density.shape)
    d = density.to(compute_dtype(density.dtype))
    blocks = d.reshape(*lead, k, n // k, k, m // k).sum(dim=(-3, -1))
    return normalize_per_item(blocks, (-2, -1)).to(density.dtype)


def pool_density1d(density: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., n)`` density -> ``(..., k)`` probabilities (block sums / item total); ``k`` divides ``n``."""
    check_float_tensor("density", density, min_ndim=1)
    *lead, n = density.shape
    _check_blocks(k, (n,), density.shape)
    d = density.to(compute_dtype(density.dtype))
    blocks = d.reshape(*lead, k, n // k).sum(dim=-1)
    return normalize_per_item(blocks, -1).to(density.dtype)
