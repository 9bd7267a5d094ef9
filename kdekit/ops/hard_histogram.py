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

Backends (:func:`kdekit._backend.select`) of :func:`hard_histogram2d`: ``torch`` (``searchsorted`` +
``scatter_add``), ``cpp``/``cuda`` (``torch.ops.kdekit.hard_histogram2d``, one pass per item) and ``triton``
(:func:`hard_histogram2d_triton`, float32 accumulation). All bin with numpy.histogram2d's float64 edges and own every
output element in one thread/program (no atomics: deterministic). :func:`hard_histogram1d` always takes the torch path.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._backend import select
from ._binning import batch_points, bin_index, edges_for_compare, resolve_range2d
from ._checks import Range, check_bins, compute_dtype, resolve_range
from ._registration import register_backward_op
from ._triton import tl, triton, triton_jit


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
    edges = edges_for_compare(resolve_range("range", range, B, x.device, torch.float64), bins, x.dtype, "range")
    idx, keep = bin_index(x, edges)
    if valid is not None:
        keep &= valid
    offset = torch.arange(B, device=x.device).unsqueeze(1) * bins
    hist = _accumulate(idx + offset, keep, weights, B * bins, x.dtype).reshape(B, bins)
    return hist[0] if unbatched else hist


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
    edges_x = edges_for_compare(rx, bins, torch.float64, "range[0] (x)")
    edges_y = edges_for_compare(ry, bins, torch.float64, "range[1] (y)")
    backend = select(x, ("torch", "cpp", "cuda", "triton"))
    if backend != "torch":
        hist = _hard_histogram2d_fused(backend, x, y, (rx, ry), (edges_x, edges_y), valid=valid, weights=weights)
        return hist[0] if unbatched else hist
    ix, keep_x = bin_index(x, edges_x)
    iy, keep_y = bin_index(y, edges_y)
    keep = keep_x & keep_y
    if valid is not None:
        keep &= valid
    offset = torch.arange(B, device=x.device).unsqueeze(1) * (bins * bins)
    flat = offset + ix * bins + iy
    hist = _accumulate(flat, keep, weights, B * bins * bins, x.dtype).reshape(B, bins, bins)
    return hist[0] if unbatched else hist


def _hard_histogram2d_fused(backend: str, x, y, ranges, edges, *, valid, weights) -> torch.Tensor:
    """The fused kernels (``cpp``/``cuda``: ``torch.ops.kdekit.hard_histogram2d``; ``triton``): summed weights (1 by
    default, 0 for masked points) of the points in each bin; differentiable w.r.t. ``weights``. ``ranges`` and
    ``edges``: the ``(x, y)`` pairs of (B, 2) float64 ranges and (B, bins + 1) bin edges."""
    (rx, ry), (edges_x, edges_y) = ranges, edges
    acc = compute_dtype(x.dtype)
    w = torch.ones_like(x, dtype=acc) if weights is None else weights.to(acc)
    if valid is not None:
        w = torch.where(valid, w, 0)
    if backend == "triton":
        hist = hard_histogram2d_triton(x.contiguous(), y.contiguous(), w.contiguous(), edges_x, edges_y)
    else:
        hist = torch.ops.kdekit.hard_histogram2d(x.to(acc).contiguous(), y.to(acc).contiguous(), w.contiguous(),
                                                 rx.contiguous(), ry.contiguous(), edges_x.shape[1] - 1)
    return hist.to(x.dtype)


# ---- Triton kernels: numpy.histogram2d binning against float64 edges, float32 sums ----------------------------------
# Forward: one program per (item, block of x bins, block of y bins) scans all points in tiles of BLOCK_N and adds
# onehot_x^T (w * onehot_y) with tl.dot (exact products, float32 sums): no atomics, every output element is written by
# one program, so the result is bitwise reproducible; the work is O(N bins^2 / (BLOCK_I BLOCK_J)) per program grid.
# Backward (weights): one program per (item, tile of points) gathers dL/dH at each point's bin (0 when dropped).


@triton_jit
def _hard_bin(v, edges_ptr, bins):
    """Bin of float64 values ``v`` for the ``bins + 1`` float64 edges at ``edges_ptr``, -1 outside ``[e_0, e_bins]``
    or NaN: the estimate ``(v - e_0) / step`` is off by at most one bin, then corrected against the exact edges."""
    lo = tl.load(edges_ptr)
    hi = tl.load(edges_ptr + bins)
    inside = (v >= lo) & (v <= hi)
    v = tl.where(inside, v, lo)
    g = tl.minimum(((v - lo) / ((hi - lo) / bins)).to(tl.int32), bins - 1)
    g = tl.where((g > 0) & (v < tl.load(edges_ptr + g)), g - 1, g)
    g = tl.where((g < bins - 1) & (v >= tl.load(edges_ptr + g + 1)), g + 1, g)
    return tl.where(inside, g, -1)


@triton_jit
def _hard_hist2d_fwd_kernel(x_ptr, y_ptr, w_ptr, ex_ptr, ey_ptr, out_ptr, N, bins,
                            BLOCK_N: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    b = tl.program_id(0)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < N
        x = tl.load(x_ptr + b * N + n, mask=valid, other=float("nan")).to(tl.float64)
        y = tl.load(y_ptr + b * N + n, mask=valid, other=float("nan")).to(tl.float64)
        w = tl.load(w_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
        ix = _hard_bin(x, ex_ptr + b * (bins + 1), bins)
        iy = _hard_bin(y, ey_ptr + b * (bins + 1), bins)
        iy = tl.where(ix >= 0, iy, -1)  # a point counts only if both coordinates are in range
        onehot_x = tl.where(ix[:, None] == i[None, :], 1.0, 0.0)
        weighted_y = tl.where(iy[:, None] == j[None, :], w[:, None], 0.0)
        acc += tl.dot(tl.trans(onehot_x), weighted_y, input_precision="ieee")
    out = out_ptr + b * bins * bins + i[:, None] * bins + j[None, :]
    tl.store(out, acc, mask=(i < bins)[:, None] & (j < bins)[None, :])


@triton_jit
def _hard_hist2d_bwd_kernel(g_ptr, x_ptr, y_ptr, ex_ptr, ey_ptr, gw_ptr, N, bins, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = n < N
    x = tl.load(x_ptr + b * N + n, mask=valid, other=float("nan")).to(tl.float64)
    y = tl.load(y_ptr + b * N + n, mask=valid, other=float("nan")).to(tl.float64)
    ix = _hard_bin(x, ex_ptr + b * (bins + 1), bins)
    iy = _hard_bin(y, ey_ptr + b * (bins + 1), bins)
    keep = (ix >= 0) & (iy >= 0)
    g = tl.load(g_ptr + b * bins * bins + ix * bins + iy, mask=valid & keep, other=0.0)
    tl.store(gw_ptr + b * N + n, g.to(tl.float32), mask=valid)


def _hard_blocks(bins: int) -> int:
    return min(64, max(16, triton.next_power_of_2(bins)))


@torch.library.custom_op("kdekit::hard_histogram2d_triton", mutates_args=())
def hard_histogram2d_triton(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, edges_x: torch.Tensor,
                            edges_y: torch.Tensor) -> torch.Tensor:
    """numpy.histogram2d of contiguous ``(B, N)`` points (any float dtype, compared as float64) with per-item float64
    edges ``(B, bins + 1)`` (:func:`~kdekit.ops._binning.bin_edges`), summing contiguous ``(B, N)`` weights; float32 ``(B, bins, bins)``."""
    (B, N), bins = x.shape, edges_x.shape[1] - 1
    block = _hard_blocks(bins)
    out = torch.empty((B, bins, bins), device=x.device, dtype=torch.float32)
    grid = (B, triton.cdiv(bins, block), triton.cdiv(bins, block))
    _hard_hist2d_fwd_kernel[grid](x, y, weights, edges_x.contiguous(), edges_y.contiguous(), out, N, bins,
                                  BLOCK_N=32, BLOCK_I=block, BLOCK_J=block)
    return out


@hard_histogram2d_triton.register_fake
def _(x, y, weights, edges_x, edges_y):
    bins = edges_x.shape[1] - 1
    return x.new_empty((x.shape[0], bins, bins), dtype=torch.float32)


@torch.library.custom_op("kdekit::hard_histogram2d_triton_backward", mutates_args=())
def hard_histogram2d_triton_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, edges_x: torch.Tensor,
                                     edges_y: torch.Tensor) -> torch.Tensor:
    """``dL/dweights`` of :func:`hard_histogram2d_triton`: ``grad[b, bin_x, bin_y]`` per point (0 when dropped),
    float32 ``(B, N)``."""
    (B, N), bins = x.shape, edges_x.shape[1] - 1
    gw = torch.empty((B, N), device=x.device, dtype=torch.float32)
    _hard_hist2d_bwd_kernel[(B, triton.cdiv(N, 128))](grad.contiguous(), x, y, edges_x.contiguous(),
                                                      edges_y.contiguous(), gw, N, bins, BLOCK_N=128)
    return gw


@hard_histogram2d_triton_backward.register_fake
def _(grad, x, y, edges_x, edges_y):
    return x.new_empty(x.shape, dtype=torch.float32)


register_backward_op(hard_histogram2d_triton, hard_histogram2d_triton_backward, differentiable=(2,),
                     saved=(0, 1, 3, 4))
