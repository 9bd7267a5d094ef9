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
and ``weights``.

Backends (:func:`kdekit._backend.select`) of :func:`soft_histogram2d`: ``torch`` (the reference above: sigmoid matrices
and one ``bmm``), ``cpp``/``cuda`` (``torch.ops.kdekit.soft_histogram2d``: fused, tiles of points, the input dtype) and
``triton`` (:func:`soft_histogram2d_triton`, float32 accumulation, ``bins <= TRITON_MAX_BINS``; beyond it the automatic
choice takes the CUDA kernel up to ``CUDA_MAX_BINS``, then the torch path). The fused kernels never
build the ``(B, N, bins)`` matrices, recompute them in the backward pass and own every output element in one
thread/program (no atomics: deterministic). :func:`soft_histogram1d` always takes the torch path.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from .._backend import _status, forced_backend, select
from ._binning import batch_points, bin_edges, resolve_range2d
from ._checks import Range, check_bins, compute_dtype, resolve_range
from ._reduction import normalize_per_item
from ._registration import register_backward_op
from ._triton import tl, triton, triton_jit


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
    backend = _backend_for_bins(select(x, ("torch", "cpp", "cuda", "triton")), bins)
    if torch.is_grad_enabled() and (rx.requires_grad or ry.requires_grad):
        backend = "torch"  # the kernels differentiate the points and weights, not the range
    if backend == "torch":
        mass_x = _bin_mass(x, rx, bins, sharpness, valid)
        mass_y = _bin_mass(y, ry, bins, sharpness, valid)
        hist = torch.bmm(mass_x.transpose(1, 2), _point_weights(x, valid, weights).unsqueeze(-1) * mass_y)
    else:
        hist = _soft_histogram2d_fused(backend, x, y, (rx, ry), bins, sharpness=sharpness, valid=valid,
                                      weights=weights)
    if normalize:
        hist = normalize_per_item(hist, (-2, -1))
    hist = hist.to(out_dtype)
    return hist[0] if unbatched else hist


def _backend_for_bins(backend: str, bins: int) -> str:
    """The automatic choice moved to a kernel that takes ``bins``: Triton up to :data:`TRITON_MAX_BINS`, then the
    CUDA kernel up to :data:`CUDA_MAX_BINS`, then the torch path. A forced backend is kept (and says so when the
    bins are too many for it)."""
    if forced_backend() is not None:
        return backend
    if backend == "triton" and bins > TRITON_MAX_BINS:
        backend = "cuda" if bins <= CUDA_MAX_BINS and _status("cuda")[0] else "torch"
    if backend == "cuda" and bins > CUDA_MAX_BINS:
        backend = "torch"
    return backend


def _soft_histogram2d_fused(backend: str, x, y, ranges, bins: int, *, sharpness: float, valid,
                            weights) -> torch.Tensor:
    """The fused kernels (``cpp``/``cuda``: ``torch.ops.kdekit.soft_histogram2d``; ``triton``): same value and
    gradients as the torch path, without the ``(B, N, bins)`` sigmoid matrices. Masked points are moved to ``lo``
    with weight 0 exactly as in the torch path. ``ranges``: the (B, 2) float64 ranges ``(rx, ry)``."""
    rx, ry = ranges
    w = _point_weights(x, valid, weights)
    if valid is not None:
        x, y = torch.where(valid, x, rx[:, :1]), torch.where(valid, y, ry[:, :1])
    args = (x.contiguous(), y.contiguous(), w.contiguous(), rx.to(torch.float64).contiguous(),
            ry.to(torch.float64).contiguous())
    if backend == "triton":
        return soft_histogram2d_triton(*args, bins=bins, sharpness=sharpness).to(x.dtype)
    return torch.ops.kdekit.soft_histogram2d(*args, bins, sharpness)


# ---- Triton kernels: float32 accumulation, the maths of csrc/cpu/soft_histogram.cpp ----------------------------------
#   backward (G = dL/dH): v = A_y G^T, u = A_x G,
#       dL/dw = sum_i A_x v,   dL/dx = w sum_i dA_x v,   dL/dy = w sum_j dA_y u
# Forward: one program per (item, block of x bins) loops over the points in tiles of BLOCK_N (the sigmoid matrices
# exist only as BLOCK_N x bins tiles). Backward: one program per (item, tile of points) with the whole bins x bins
# gradient. Every output element is written by one program (deterministic). Inputs of any float dtype are loaded as
# float32; outputs are float32 (the caller casts back). On CUDA tensors, or CPU tensors under TRITON_INTERPRET=1.

TRITON_MAX_BINS = 128
CUDA_MAX_BINS = 256  # the CUDA backward's per-thread buffers (csrc/cuda/soft_histogram.cu, kMaxBins)


@triton_jit
def _sigmoid_mass(x, edge_lo, edge_hi, s):
    """A (and dA/dx) for points ``x`` [BLOCK_N, 1] against bin edges [1, BLOCK_B]."""
    c_lo = 1.0 / (1.0 + tl.exp(-s * (x - edge_lo)))
    c_hi = 1.0 / (1.0 + tl.exp(-s * (x - edge_hi)))
    return c_lo - c_hi, s * (c_lo * (1.0 - c_lo) - c_hi * (1.0 - c_hi))


@triton_jit
def _edges(range_ptr, b, idx, bins):
    """Lower and upper edges of bins ``idx`` (numpy linspace rule: e = i * step + lo, e_bins = hi)."""
    lo = tl.load(range_ptr + 2 * b).to(tl.float32)
    hi = tl.load(range_ptr + 2 * b + 1).to(tl.float32)
    step = (hi - lo) / bins
    e_lo = tl.where(idx == bins, hi, idx.to(tl.float32) * step + lo)
    e_hi = tl.where(idx + 1 == bins, hi, (idx + 1).to(tl.float32) * step + lo)
    return e_lo, e_hi


@triton_jit
def _soft_hist2d_fwd_kernel(x_ptr, y_ptr, w_ptr, rx_ptr, ry_ptr, out_ptr, N, bins, s,
                            BLOCK_N: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_B: tl.constexpr):
    b = tl.program_id(0)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    j = tl.arange(0, BLOCK_B)
    ex_lo, ex_hi = _edges(rx_ptr, b, i, bins)
    ey_lo, ey_hi = _edges(ry_ptr, b, j, bins)
    acc = tl.zeros((BLOCK_I, BLOCK_B), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < N
        x = tl.load(x_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
        ax, _ = _sigmoid_mass(x[:, None], ex_lo[None, :], ex_hi[None, :], s)
        ay, _ = _sigmoid_mass(y[:, None], ey_lo[None, :], ey_hi[None, :], s)
        ax = tl.where((i < bins)[None, :], ax, 0.0)
        ay = tl.where((j < bins)[None, :] & valid[:, None], ay * w[:, None], 0.0)
        acc += tl.dot(tl.trans(ax), ay, input_precision="ieee")
    out = out_ptr + b * bins * bins + i[:, None] * bins + j[None, :]
    tl.store(out, acc, mask=(i < bins)[:, None] & (j < bins)[None, :])


@triton_jit
def _soft_hist2d_bwd_kernel(g_ptr, x_ptr, y_ptr, w_ptr, rx_ptr, ry_ptr, gx_ptr, gy_ptr, gw_ptr, N, bins, s,
                            BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    b = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = n < N
    k = tl.arange(0, BLOCK_B)
    kin = k < bins
    ex_lo, ex_hi = _edges(rx_ptr, b, k, bins)
    ey_lo, ey_hi = _edges(ry_ptr, b, k, bins)
    g = tl.load(g_ptr + b * bins * bins + k[:, None] * bins + k[None, :], mask=kin[:, None] & kin[None, :],
                other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + b * N + n, mask=valid, other=0.0).to(tl.float32)
    ax, dax = _sigmoid_mass(x[:, None], ex_lo[None, :], ex_hi[None, :], s)
    ay, day = _sigmoid_mass(y[:, None], ey_lo[None, :], ey_hi[None, :], s)
    ax = tl.where(kin[None, :], ax, 0.0)
    ay = tl.where(kin[None, :], ay, 0.0)
    v = tl.dot(ay, tl.trans(g), input_precision="ieee")  # v[n, i] = sum_j G[i, j] A_y[n, j]
    u = tl.dot(ax, g, input_precision="ieee")  # u[n, j] = sum_i A_x[n, i] G[i, j]
    gw = tl.sum(ax * v, axis=1)
    gx = w * tl.sum(tl.where(kin[None, :], dax, 0.0) * v, axis=1)
    gy = w * tl.sum(tl.where(kin[None, :], day, 0.0) * u, axis=1)
    tl.store(gw_ptr + b * N + n, gw, mask=valid)
    tl.store(gx_ptr + b * N + n, gx, mask=valid)
    tl.store(gy_ptr + b * N + n, gy, mask=valid)


def _block_bins(bins: int) -> int:
    if bins > TRITON_MAX_BINS:
        raise ValueError(f"the Triton soft histogram supports bins <= {TRITON_MAX_BINS}, got {bins}")
    return max(16, triton.next_power_of_2(bins))


def soft_histogram2d_fwd(x, y, weights, range_x, range_y, *, bins: int, sharpness: float, block_n: int = 16):
    """``(B, bins, bins)`` float32 soft histogram of contiguous ``(B, N)`` points; ranges ``(B, 2)`` float64."""
    B, N = x.shape
    block_b = _block_bins(bins)
    block_i = min(block_b, 64)
    out = torch.empty((B, bins, bins), device=x.device, dtype=torch.float32)
    grid = (B, triton.cdiv(bins, block_i))
    _soft_hist2d_fwd_kernel[grid](x, y, weights, range_x, range_y, out, N, bins, float(sharpness),
                                  BLOCK_N=block_n, BLOCK_I=block_i, BLOCK_B=block_b)
    return out


def soft_histogram2d_bwd(grad, x, y, weights, range_x, range_y, *, bins: int, sharpness: float,
                         block_n: int = 16):
    """Gradients ``(dL/dx, dL/dy, dL/dw)`` (float32, ``(B, N)`` each) for ``grad = dL/dH`` ``(B, bins, bins)``."""
    B, N = x.shape
    block_b = _block_bins(bins)
    gx = torch.empty((B, N), device=x.device, dtype=torch.float32)
    gy, gw = torch.empty_like(gx), torch.empty_like(gx)
    grid = (B, triton.cdiv(N, block_n))
    _soft_hist2d_bwd_kernel[grid](grad.contiguous(), x, y, weights, range_x, range_y, gx, gy, gw, N, bins,
                                  float(sharpness), BLOCK_N=block_n, BLOCK_B=block_b)
    return gx, gy, gw


@torch.library.custom_op("kdekit::soft_histogram2d_triton", mutates_args=())
def soft_histogram2d_triton(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, range_x: torch.Tensor,
                            range_y: torch.Tensor, *, bins: int, sharpness: float) -> torch.Tensor:
    """Triton twin of ``torch.ops.kdekit.soft_histogram2d`` (same arguments: contiguous ``(B, N)`` points and
    weights of one float dtype, ``(B, 2)`` float64 ranges); returns float32 ``(B, bins, bins)``."""
    return soft_histogram2d_fwd(x, y, weights, range_x, range_y, bins=bins, sharpness=sharpness)


@soft_histogram2d_triton.register_fake
def _(x, y, weights, range_x, range_y, *, bins, sharpness):
    return x.new_empty((x.shape[0], bins, bins), dtype=torch.float32)


@torch.library.custom_op("kdekit::soft_histogram2d_triton_backward", mutates_args=())
def soft_histogram2d_triton_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                                     range_x: torch.Tensor, range_y: torch.Tensor, *, bins: int,
                                     sharpness: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dL/dx, dL/dy, dL/dw)`` of :func:`soft_histogram2d_triton`, float32 ``(B, N)``."""
    return soft_histogram2d_bwd(grad, x, y, weights, range_x, range_y, bins=bins, sharpness=sharpness)


@soft_histogram2d_triton_backward.register_fake
def _(grad, x, y, weights, range_x, range_y, *, bins, sharpness):
    return tuple(x.new_empty(x.shape, dtype=torch.float32) for _ in range(3))


register_backward_op(soft_histogram2d_triton, soft_histogram2d_triton_backward, differentiable=(0, 1, 2))
