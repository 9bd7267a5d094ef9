"""Binning shared by the histogram ops and the KDE: numpy's bin edges, per-item ranges, batched point validation."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ._checks import check_points, check_same, check_weights, compute_dtype, resolve_mask, resolve_range


def bin_edges(rng: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-item equal-width edges ``(B, bins + 1)`` from a ``(B, 2)`` range, bit-equal to ``numpy.linspace``.

    Computed in the dtype of ``rng`` (pass float64 to match numpy's edges).
    """
    lo, hi = rng[:, :1], rng[:, 1:]
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, device=rng.device, dtype=rng.dtype) * step + lo
    edges[:, -1:] = hi
    return edges


def batch_points(
    names: Sequence[str],
    points: Sequence[torch.Tensor],
    mask: Optional[torch.Tensor],
    lengths,
    weights: Optional[torch.Tensor],
) -> Tuple[bool, Tuple[torch.Tensor, ...], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Validate histogram inputs; returns ``(unbatched, points (B, N) each, valid mask (B, N) or None, weights)``.

    A 1-D ``(N,)`` input (with ``(N,)`` mask/weights and a scalar or ``(1,)`` ``lengths``) is one item;
    ``unbatched`` tells the caller to drop the batch dim of the result.
    """
    first = points[0]
    unbatched = isinstance(first, torch.Tensor) and first.dim() == 1
    if unbatched:
        points = [p.unsqueeze(0) if isinstance(p, torch.Tensor) and p.dim() == 1 else p for p in points]
        if isinstance(mask, torch.Tensor):
            mask = mask.unsqueeze(0)
        if isinstance(weights, torch.Tensor):
            weights = weights.unsqueeze(0)
        if lengths is not None:
            lengths = torch.as_tensor(lengths).reshape(-1)
    x = check_points(names[0], points[0])
    for name, p in zip(names[1:], points[1:]):
        check_points(name, p)
        check_same(names[0], x, name, p)
    valid = resolve_mask(x, mask=mask, lengths=lengths)
    weights = check_weights(weights, x)
    return unbatched, tuple(points), valid, weights


def bin_index(x: torch.Tensor, edges: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bin index ``(B, N)`` (int64, clamped into ``[0, bins)``) and in-range flag of points ``x`` for ``edges``.

    Both are compared in ``edges.dtype``; NaN is never in range.
    """
    bins = edges.shape[-1] - 1
    xe = x.to(edges.dtype)
    in_range = (xe >= edges[:, :1]) & (xe <= edges[:, -1:])
    # number of edges <= x, minus one: e_i <= x < e_{i+1}; x == hi lands on index `bins` and is clamped to the last bin
    idx = torch.searchsorted(edges.contiguous(), xe.contiguous(), right=True) - 1
    return idx.clamp_(0, bins - 1), in_range


def edges_for_compare(rng64: torch.Tensor, bins: int, dtype: torch.dtype, name: str) -> torch.Tensor:
    """float64 numpy edges cast to the comparison ``dtype`` and widened to its compute dtype (order-preserving)."""
    edges = bin_edges(rng64, bins).to(dtype)
    if (edges[:, 1:] <= edges[:, :-1]).any():
        raise ValueError(f"too many bins ({bins}) for {name} in {dtype}: the bin edges are not strictly increasing")
    return edges.to(compute_dtype(dtype))


def resolve_range2d(rng, batch: int, device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """A 2-D range ``((xlo, xhi), (ylo, yhi))``, a ``(2, 2)`` or a per-item ``(B, 2, 2)`` tensor as two ``(B, 2)``."""
    if isinstance(rng, torch.Tensor):
        if rng.shape not in ((2, 2), (batch, 2, 2)):
            raise ValueError(f"range must be ((xlo, xhi), (ylo, yhi)), a (2, 2) or a ({batch}, 2, 2) tensor, "
                             f"got shape {tuple(rng.shape)}")
        rx, ry = rng[..., 0, :], rng[..., 1, :]
    else:
        if not isinstance(rng, Sequence) or len(rng) != 2:
            raise ValueError(f"range must be ((xlo, xhi), (ylo, yhi)), got {rng!r}")
        rx, ry = rng
    return (resolve_range("range[0] (x)", rx, batch, device, dtype),
            resolve_range("range[1] (y)", ry, batch, device, dtype))
