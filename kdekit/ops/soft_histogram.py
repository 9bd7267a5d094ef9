"""Batched differentiable (sigmoid) histograms: the seed's soft histogram in 1-D and 2-D.

With ``d = (hi - lo) / bins`` and bin centres ``c_i = lo + d (i + 1/2)``, point ``x`` gives bin ``i`` the mass::

    A[i] = sigmoid(s (x - c_i + d/2)) - sigmoid(s (x - c_i - d/2)) = sigmoid(s (x - e_i)) - sigmoid(s (x - e_{i+1}))

(``e_i`` = the :func:`~kdekit.ops.hard_histogram.bin_edges` of ``numpy.linspace(lo, hi, bins + 1)``; one sigmoid per
edge, then a difference). 1-D: ``H[b, i] = sum_n w[b, n] A[b, n, i]``. 2-D: ``H[b] = A_x[b]^T (w[b] * A_y[b])``
(``[x_bin, y_bin]``), one batched matmul of the ``(B, N, bins)`` sigmoid-difference matrices.

**Border mass leakage.** A point's total mass telescopes to ``sigmoid(s (x - lo)) - sigmoid(s (x - hi))``: the kernel
is a logistic with sd ``pi / (s sqrt 3)`` (0.227 at ``s = 8``) and the part of it beyond the range is lost. At
``s = 8`` on ``[-1, 1]``: 0.9993 at 0, 0.69 at 0.9, ~0.5 at an edge, ~0.25 in a 2-D corner. The unnormalised
histogram therefore sums to less than the number of points; ``normalize=True`` divides each item by its own total
(an item with total 0, e.g. all points masked, stays all zeros). Large ``s`` (``s >> bins / (hi - lo)``) approaches
the hard histogram for points away from the edges.

Masked/padded points contribute exactly nothing and get zero gradient: they are replaced (``torch.where``) by ``lo``
before the sigmoid and their weight by 0, so NaN/Inf at masked positions never reach the output or the gradients.
NaN at an *unmasked* position propagates into that item (use ``mask``); +-Inf there contributes 0.

float16/bfloat16 inputs are computed in float32 and returned in the input dtype. Differentiable w.r.t. the points
and ``weights`` (plain torch ops).
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from .._backend import select
from ._utils import Range, check_bins, compute_dtype, resolve_range
from .hard_histogram import batch_points, bin_edges, resolve_range2d
from .pooling import normalize_per_item


def _check_sharpness(sharpness) -> float:
    if isinstance(sharpness, bool) or not isinstance(sharpness, numbers.Real):
        raise TypeError(f"sharpness must be a real number, got {type(sharpness).__name__}")
    if not (0 < sharpness < float("inf")):
        raise ValueError(f"sharpness must be positive and finite, got {sharpness}")
    return float(sharpness)


def _bin_mass(x: torch.Tensor, rng: torch.Tensor, bins: int, sharpness: float, valid) -> torch.Tensor:
    """Sigmoid-difference matrix ``A`` ``(B, N, bins)`` in ``x.dtype``; masked rows hold finite dummy values."""
    if valid is not None:
        x = torch.where(valid, x, rng[:, :1])
    edges = bin_edges(rng, bins)  # (B, bins + 1)
    cdf = torch.sigmoid(sharpness * (x.unsqueeze(-1) - edges.unsqueeze(1)))  # (B, N, bins + 1)
    return cdf[..., :-1] - cdf[..., 1:]


def _point_weights(x: torch.Tensor, valid, weights) -> torch.Tensor:
    """Per-point weights ``(B, N)`` in ``x.dtype``: ``weights`` (or 1) where valid, exactly 0 where masked."""
    w = torch.ones_like(x) if weights is None else weights.to(x.dtype)
    return w if valid is None else torch.where(valid, w, 0)


def soft_histogram1d(
    x: torch.Tensor,
    bins: int,
    range: Range,
    sharpness: float,
    *,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Soft histogram ``H[b, i] = sum_n w[b, n] A[b, n, i]`` (see the module docstring for ``A``).

    Args:
        x: points ``(B, N)`` (or ``(N,)``: one item), floating dtype.
        bins: number of equal bins, >= 2.
        range: ``(lo, hi)`` or a per-item ``(B, 2)`` tensor.
        sharpness: sigmoid slope ``s`` > 0 (the seed's "temperature", 8 in its training config).
        mask: optional bool ``(B, N)``, True = valid. Mutually exclusive with ``lengths``.
        lengths: optional int ``(B,)``: the first ``lengths[b]`` points of row ``b`` are valid.
        weights: optional ``(B, N)`` per-point weights (default 1).
        normalize: divide each item by its total mass (see border leakage in the module docstring).

    Returns:
        ``(B, bins)`` (or ``(bins,)``) in ``x.dtype``.
    """
    check_bins(bins)
    sharpness = _check_sharpness(sharpness)
    unbatched, (x,), valid, weights = batch_points(("x",), (x,), mask, lengths, weights)
    out_dtype, acc = x.dtype, compute_dtype(x.dtype)
    x = x.to(acc)
    rng = resolve_range("range", range, x.shape[0], x.device, acc)
    mass = _bin_mass(x, rng, bins, sharpness, valid)
    hist = torch.einsum("bn,bni->bi", _point_weights(x, valid, weights), mass)
    if normalize:
        hist = normalize_per_item(hist, -1)
    hist = hist.to(out_dtype)
    return hist[0] if unbatched else hist


def soft_histogram2d(
    x: torch.Tensor,
    y: torch.Tensor,
    bins: int,
    range,
    sharpness: float,
    *,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Soft 2-D histogram ``H[b] = A_x[b]^T (w[b] * A_y[b])``, indexed ``[x_bin, y_bin]``.

    Args:
        x, y: point coordinates ``(B, N)`` (or ``(N,)``), same floating dtype and device.
        bins: number of equal bins per axis, >= 2.
        range: ``((xlo, xhi), (ylo, yhi))``, a ``(2, 2)`` or a per-item ``(B, 2, 2)`` tensor.
        sharpness, mask, lengths, weights, normalize: as in :func:`soft_histogram1d`.

    Returns:
        ``(B, bins, bins)`` (or ``(bins, bins)``) in ``x.dtype``.
    """
    check_bins(bins)
    sharpness = _check_sharpness(sharpness)
    unbatched, (x, y), valid, weights = batch_points(("x", "y"), (x, y), mask, lengths, weights)
    out_dtype, acc = x.dtype, compute_dtype(x.dtype)
    x, y = x.to(acc), y.to(acc)
    rx, ry = resolve_range2d(range, x.shape[0], x.device, acc)
    backend = select(x, ("torch", "cpp", "cuda", "triton"))
    if backend == "torch":
        mass_x = _bin_mass(x, rx, bins, sharpness, valid)
        mass_y = _bin_mass(y, ry, bins, sharpness, valid)
        hist = torch.bmm(mass_x.transpose(1, 2), _point_weights(x, valid, weights).unsqueeze(-1) * mass_y)
    else:
        hist = _soft_histogram2d_fused(backend, x, y, rx, ry, bins, sharpness, valid, weights)
    if normalize:
        hist = normalize_per_item(hist, (-2, -1))
    hist = hist.to(out_dtype)
    return hist[0] if unbatched else hist


def _soft_histogram2d_fused(backend: str, x, y, rx, ry, bins: int, sharpness: float, valid, weights) -> torch.Tensor:
    """The fused kernels (``cpp``/``cuda``: ``torch.ops.kdekit.soft_histogram2d``; ``triton``): same value and
    gradients as the torch path, without the ``(B, N, bins)`` sigmoid matrices. Masked points are moved to ``lo``
    with weight 0 exactly as in the torch path."""
    w = _point_weights(x, valid, weights)
    if valid is not None:
        x, y = torch.where(valid, x, rx[:, :1]), torch.where(valid, y, ry[:, :1])
    args = (x.contiguous(), y.contiguous(), w.contiguous(), rx.to(torch.float64).contiguous(),
            ry.to(torch.float64).contiguous(), bins, sharpness)
    if backend == "triton":
        from .triton_soft_histogram import soft_histogram2d_triton

        return soft_histogram2d_triton(*args).to(x.dtype)
    return torch.ops.kdekit.soft_histogram2d(*args)
