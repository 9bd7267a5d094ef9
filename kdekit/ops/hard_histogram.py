"""Batched hard histograms equal to ``numpy.histogram`` (1-D) and ``numpy.histogram2d`` (2-D).

Binning follows numpy exactly, per item ``b`` of the batch:

* edges = ``numpy.linspace(lo, hi, bins + 1)`` evaluated the way numpy does it (``i * ((hi - lo) / bins) + lo`` in
  float64, last edge set to ``hi``); ``lo``/``hi`` are taken as float64 (a Python-float ``range``);
* bins are left-closed ``[e_i, e_{i+1})``, the last bin is closed ``[e_{bins-1}, hi]``;
* points outside ``[lo, hi]``, NaN and +-Inf are dropped; masked/padded points are dropped.

``numpy.histogram`` compares points with the edges *cast to the point dtype* (float32 data: float32 edges);
``numpy.histogram2d`` compares them with float64 edges whatever the point dtype. :func:`hard_histogram1d` and
:func:`hard_histogram2d` reproduce each rule, so float32 results match numpy even for edges that float32 cannot
represent. (The 2-D path therefore needs float64 support on the device.)

Counts (or summed weights) are accumulated in float32 for float16/bfloat16 inputs, in the input dtype otherwise, with
one ``scatter_add`` into a flat ``(B * bins [* bins] + 1)`` buffer (the extra slot collects dropped points), and
returned in the input dtype. No Python loop over the batch. The result is differentiable w.r.t. ``weights`` only
(bin membership is piecewise constant in the points).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .._backend import select
from ._utils import (
    Range,
    check_bins,
    check_points,
    check_same,
    check_weights,
    compute_dtype,
    resolve_mask,
    resolve_range,
)


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


def _bin_index(x: torch.Tensor, edges: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bin index ``(B, N)`` (int64, clamped into ``[0, bins)``) and in-range flag of points ``x`` for ``edges``.

    Both are compared in ``edges.dtype``; NaN is never in range.
    """
    bins = edges.shape[-1] - 1
    xe = x.to(edges.dtype)
    in_range = (xe >= edges[:, :1]) & (xe <= edges[:, -1:])
    # number of edges <= x, minus one: e_i <= x < e_{i+1}; x == hi lands on index `bins` and is clamped to the last bin
    idx = torch.searchsorted(edges.contiguous(), xe.contiguous(), right=True) - 1
    return idx.clamp_(0, bins - 1), in_range


def _edges_for_compare(rng64: torch.Tensor, bins: int, dtype: torch.dtype, name: str) -> torch.Tensor:
    """float64 numpy edges cast to the comparison ``dtype`` and widened to its compute dtype (order-preserving)."""
    edges = bin_edges(rng64, bins).to(dtype)
    if (edges[:, 1:] <= edges[:, :-1]).any():
        raise ValueError(f"too many bins ({bins}) for {name} in {dtype}: the bin edges are not strictly increasing")
    return edges.to(compute_dtype(dtype))


def _accumulate(flat_index: torch.Tensor, keep: torch.Tensor, weights: Optional[torch.Tensor], size: int, dtype):
    """Sum ones (or weights) of kept points into ``size`` slots; dropped points go to a discarded extra slot."""
    acc = compute_dtype(dtype)
    flat_index = torch.where(keep, flat_index, size).reshape(-1)
    if weights is None:
        values = keep.to(acc).reshape(-1)
    else:
        values = torch.where(keep, weights.to(acc), 0).reshape(-1)
    out = torch.zeros(size + 1, device=flat_index.device, dtype=acc).scatter_add_(0, flat_index, values)
    return out[:size].to(dtype)


def hard_histogram1d(
    x: torch.Tensor,
    bins: int,
    range: Range,
    *,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Batched ``numpy.histogram(x[b], bins, range=range[b], weights=weights[b])`` (counts only).

    Args:
        x: points ``(B, N)`` (or ``(N,)``: one item), floating dtype.
        bins: number of equal bins, >= 2.
        range: ``(lo, hi)`` shared by all items, or a per-item ``(B, 2)`` tensor; ``lo < hi``, finite.
        mask: optional bool ``(B, N)``, True = valid point. Mutually exclusive with ``lengths``.
        lengths: optional int ``(B,)``: the first ``lengths[b]`` points of row ``b`` are valid (right padding).
        weights: optional ``(B, N)`` per-point weights (default 1).

    Returns:
        ``(B, bins)`` (or ``(bins,)``) counts / summed weights in ``x.dtype``. Points are compared with the float64
        numpy edges cast to ``x.dtype`` (numpy.histogram's rule).
    """
    check_bins(bins)
    unbatched, (x,), valid, weights = batch_points(("x",), (x,), mask, lengths, weights)
    B = x.shape[0]
    edges = _edges_for_compare(resolve_range("range", range, B, x.device, torch.float64), bins, x.dtype, "range")
    idx, keep = _bin_index(x, edges)
    if valid is not None:
        keep &= valid
    offset = torch.arange(B, device=x.device).unsqueeze(1) * bins
    hist = _accumulate(idx + offset, keep, weights, B * bins, x.dtype).reshape(B, bins)
    return hist[0] if unbatched else hist


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


def hard_histogram2d(
    x: torch.Tensor,
    y: torch.Tensor,
    bins: int,
    range,
    *,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Batched ``numpy.histogram2d(x[b], y[b], bins, range=range[b], weights=weights[b])`` (counts only).

    Args:
        x, y: point coordinates ``(B, N)`` (or ``(N,)``: one item), same floating dtype and device.
        bins: number of equal bins per axis, >= 2.
        range: ``((xlo, xhi), (ylo, yhi))``, a ``(2, 2)`` tensor, or a per-item ``(B, 2, 2)`` tensor.
        mask, lengths, weights: as in :func:`hard_histogram1d`; a point is dropped if either coordinate is
            out of range or non-finite.

    Returns:
        ``(B, bins, bins)`` (or ``(bins, bins)``) in ``x.dtype``, indexed ``[x_bin, y_bin]`` like numpy.
        Points are compared with float64 edges (numpy.histogram2d's rule).
    """
    check_bins(bins)
    unbatched, (x, y), valid, weights = batch_points(("x", "y"), (x, y), mask, lengths, weights)
    B = x.shape[0]
    rx, ry = resolve_range2d(range, B, x.device, torch.float64)
    if select(x, ("torch", "cpp")) == "cpp":
        hist = _hard_histogram2d_cpp(x, y, rx, ry, bins, valid, weights)
        return hist[0] if unbatched else hist
    ix, keep_x = _bin_index(x, _edges_for_compare(rx, bins, torch.float64, "range[0] (x)"))
    iy, keep_y = _bin_index(y, _edges_for_compare(ry, bins, torch.float64, "range[1] (y)"))
    keep = keep_x & keep_y
    if valid is not None:
        keep &= valid
    offset = torch.arange(B, device=x.device).unsqueeze(1) * (bins * bins)
    flat = offset + ix * bins + iy
    hist = _accumulate(flat, keep, weights, B * bins * bins, x.dtype).reshape(B, bins, bins)
    return hist[0] if unbatched else hist


def _hard_histogram2d_cpp(x, y, rx, ry, bins: int, valid, weights) -> torch.Tensor:
    """``torch.ops.kdekit.hard_histogram2d`` (one pass per item, no index buffers); differentiable w.r.t. weights."""
    acc = compute_dtype(x.dtype)
    w = torch.ones_like(x, dtype=acc) if weights is None else weights.to(acc)
    if valid is not None:
        w = torch.where(valid, w, 0)
    hist = torch.ops.kdekit.hard_histogram2d(x.to(acc).contiguous(), y.to(acc).contiguous(), w.contiguous(),
                                             rx.contiguous(), ry.contiguous(), bins)
    return hist.to(x.dtype)
