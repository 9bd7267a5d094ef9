"""Triton kernels for the fused 2-D soft histogram (forward and backward), float32 accumulation.

Same maths as ``csrc/cpu/soft_histogram.cpp`` (see :mod:`kdekit.ops.soft_histogram` for the definition)::

    A[n, i] = sigmoid(s (x_n - e_i)) - sigmoid(s (x_n - e_{i+1})),   H = A_x^T diag(w) A_y
    backward (G = dL/dH): v = A_y G^T, u = A_x G,
        dL/dw = sum_i A_x v,   dL/dx = w sum_i dA_x v,   dL/dy = w sum_j dA_y u

Forward: one program per (item, block of x bins) loops over the points in tiles of ``BLOCK_N`` (the sigmoid
matrices exist only as ``BLOCK_N x bins`` tiles). Backward: one program per (item, tile of points) with the whole
``bins x bins`` gradient. No atomics: every output element is written by one program (deterministic).
Inputs of any float dtype are loaded as float32; outputs are float32 (the caller casts back). ``bins`` <= 128.
Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (slowly: keep sizes tiny there).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BINS = 128


@triton.jit
def _sigmoid_mass(x, edge_lo, edge_hi, s):
    """A (and dA/dx) for points ``x`` [BLOCK_N, 1] against bin edges [1, BLOCK_B]."""
    c_lo = 1.0 / (1.0 + tl.exp(-s * (x - edge_lo)))
    c_hi = 1.0 / (1.0 + tl.exp(-s * (x - edge_hi)))
    return c_lo - c_hi, s * (c_lo * (1.0 - c_lo) - c_hi * (1.0 - c_hi))


@triton.jit
def _edges(range_ptr, b, idx, bins):
    """Lower and upper edges of bins ``idx`` (numpy linspace rule: e = i * step + lo, e_bins = hi)."""
    lo = tl.load(range_ptr + 2 * b).to(tl.float32)
    hi = tl.load(range_ptr + 2 * b + 1).to(tl.float32)
    step = (hi - lo) / bins
    e_lo = tl.where(idx == bins, hi, idx.to(tl.float32) * step + lo)
    e_hi = tl.where(idx + 1 == bins, hi, (idx + 1).to(tl.float32) * step + lo)
    return e_lo, e_hi


@triton.jit
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


@triton.jit
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
    if bins > MAX_BINS:
        raise ValueError(f"the Triton soft histogram supports bins <= {MAX_BINS}, got {bins}")
    return max(16, triton.next_power_of_2(bins))


def soft_histogram2d_fwd(x, y, weights, range_x, range_y, bins: int, sharpness: float, block_n: int = 16):
    """``(B, bins, bins)`` float32 soft histogram of contiguous ``(B, N)`` points; ranges ``(B, 2)``."""
    B, N = x.shape
    block_b = _block_bins(bins)
    block_i = min(block_b, 64)
    out = torch.empty((B, bins, bins), device=x.device, dtype=torch.float32)
    grid = (B, triton.cdiv(bins, block_i))
    _soft_hist2d_fwd_kernel[grid](x, y, weights, range_x, range_y, out, N, bins, float(sharpness),
                                  BLOCK_N=block_n, BLOCK_I=block_i, BLOCK_B=block_b)
    return out


def soft_histogram2d_bwd(grad, x, y, weights, range_x, range_y, bins: int, sharpness: float, block_n: int = 16):
    """Gradients ``(dL/dx, dL/dy, dL/dw)`` (float32, ``(B, N)`` each) for ``grad = dL/dH`` ``(B, bins, bins)``."""
    B, N = x.shape
    block_b = _block_bins(bins)
    grad = grad.contiguous()
    gx = torch.empty((B, N), device=x.device, dtype=torch.float32)
    gy, gw = torch.empty_like(gx), torch.empty_like(gx)
    grid = (B, triton.cdiv(N, block_n))
    _soft_hist2d_bwd_kernel[grid](grad, x, y, weights, range_x, range_y, gx, gy, gw, N, bins, float(sharpness),
                                  BLOCK_N=block_n, BLOCK_B=block_b)
    return gx, gy, gw


@torch.library.custom_op("kdekit::soft_histogram2d_triton", mutates_args=())
def soft_histogram2d_triton(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, range_x: torch.Tensor,
                            range_y: torch.Tensor, bins: int, sharpness: float) -> torch.Tensor:
    """Triton soft histogram as a torch op (same signature as ``torch.ops.kdekit.soft_histogram2d``), float32."""
    return soft_histogram2d_fwd(x, y, weights, range_x, range_y, bins, sharpness)


@soft_histogram2d_triton.register_fake
def _(x, y, weights, range_x, range_y, bins, sharpness):
    return x.new_empty((x.shape[0], bins, bins), dtype=torch.float32)


@torch.library.custom_op("kdekit::soft_histogram2d_triton_backward", mutates_args=())
def soft_histogram2d_triton_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                                     range_x: torch.Tensor, range_y: torch.Tensor, bins: int,
                                     sharpness: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return soft_histogram2d_bwd(grad, x, y, weights, range_x, range_y, bins, sharpness)


@soft_histogram2d_triton_backward.register_fake
def _(grad, x, y, weights, range_x, range_y, bins, sharpness):
    return tuple(x.new_empty(x.shape, dtype=torch.float32) for _ in range(3))


def _setup(ctx, inputs, output):
    x, y, weights, range_x, range_y, bins, sharpness = inputs
    ctx.save_for_backward(x, y, weights, range_x, range_y)
    ctx.bins, ctx.sharpness = bins, sharpness


def _backward(ctx, grad):
    x, y, weights, range_x, range_y = ctx.saved_tensors
    gx, gy, gw = soft_histogram2d_triton_backward(grad, x, y, weights, range_x, range_y, ctx.bins, ctx.sharpness)
    return gx.to(x.dtype), gy.to(y.dtype), gw.to(weights.dtype), None, None, None, None


soft_histogram2d_triton.register_autograd(_backward, setup_context=_setup)
