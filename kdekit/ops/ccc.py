"""Concordance (Lin's CCC) and Pearson correlation, batched, masked, differentiable; streaming moments for DDP.

Conventions (sums over the valid entries along ``dim``; ``n`` = their count)::

    mean_x = sum(x) / n,  M2_x = sum((x - mean_x)^2),  C_xy = sum((x - mean_x)(y - mean_y))
    ccc     = 2 C_xy / (M2_x + M2_y + (n - ddof) (mean_x - mean_y)^2)     (= 2 s_xy / (s_x^2 + s_y^2 + (mu_x - mu_y)^2))
    pearson = C_xy / sqrt(M2_x M2_y)

``ddof = 0`` (population moments, Lin 1989, audmetric) by default; ``unbiased=True`` sets ``ddof = 1`` and equals
``torchmetrics.functional.concordance_corrcoef`` and the seed code (MIA ``metrics.py``); the two differ by O(1/n).

- Shapes: ``pred`` and ``target`` have the same shape; ``dim`` (int or tuple) is reduced, every other dim is a batch
  dim. The default ``dim=0`` reduces over the samples, as torchmetrics does: ``(N,)`` gives one value, ``(N, d)``
  one per column (e.g. activation and valence); pass ``dim=-1`` for ``(B, N)`` rows. ``mask`` (bool, same shape)
  marks valid entries; masked entries may hold anything, NaN included.
- Undefined results are NaN, per item, never an exception: fewer than ``ddof + 1`` valid entries, a zero CCC
  denominator (both inputs constant and equal), or a constant input for Pearson. Such items get zero gradients, so a
  ``nanmean`` loss over a batch stays finite. NaN in a *valid* entry gives NaN for that item only.
- Numerics: corrected two-pass (inputs are centred before any product, see ``_moments``), so large offsets do not
  cancel and constant inputs give zero variance; each item is divided by its largest magnitude first (CCC and
  Pearson are scale-free), so finite inputs never overflow the squares (1e200 in float64, 1e20 in float32).
  float16/bfloat16 are computed in float32 and returned in the input dtype.
- Backends (:func:`kdekit._backend.select`): without a mask and without a recorded gradient, :func:`ccc` runs one
  fused kernel: ``cpp``/``cuda`` (``torch.ops.kdekit.ccc``, float64 accumulation) or ``triton`` (:func:`ccc_triton`,
  float32 accumulation, any input strides); items it returns as NaN are recomputed on the (scaled) torch path, so
  huge inputs give the same finite result. Masks and gradients take the torch path (which also has higher-order
  gradients).
- :class:`CCCMoments` accumulates the moments in float64 with Chan et al.'s pairwise merge, so CCC over data split
  across batches or ranks equals CCC over all of it (not an average of per-part CCCs).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._backend import select
from ._checks import check_float_tensor, check_mask, check_same, compute_dtype, reduce_loss
from ._reduction import Dims, finish_reduction, needs_grad, reduction_dims, rows_over
from ._registration import call_without_autograd, register_backward_op
from ._triton import tl, triton, triton_jit

Moments = Tuple[torch.Tensor, ...]  # (n, mean_x, mean_y, mean_x - mean_y, M2_x, M2_y, C_xy)


def _check_pair(pred, target, dim: Dims, mask) -> Tuple[Tuple[int, ...], Optional[torch.Tensor]]:
    check_float_tensor("pred", pred, min_ndim=1)
    check_float_tensor("target", target)
    check_same("pred", pred, "target", target)
    return reduction_dims(dim, pred, "pred"), check_mask(mask, "pred", pred)


def _moments(x: torch.Tensor, y: torch.Tensor, dims: Tuple[int, ...], mask: Optional[torch.Tensor]) -> Moments:
    """``(n, mean_x, mean_y, mean_x - mean_y, M2_x, M2_y, C_xy)`` over ``dims`` (kept as size-1 dims).

    Corrected two-pass: centre on the rounded mean ``a``, then remove the residual ``r = sum(x - a) / n`` exactly
    (``M2 = sum (x - a)^2 - n r^2``). ``mean_x - mean_y`` is taken from ``a_x - a_y`` and the residuals, so it keeps
    its digits when both means are large. Items with no valid entry get ``n = 0`` and zeros.
    """
    if mask is None:
        n = torch.full((), math.prod(x.shape[d] for d in dims), dtype=x.dtype, device=x.device)
        n = n.expand([1 if d in dims else s for d, s in enumerate(x.shape)])
        valid = torch.ones((), dtype=torch.bool, device=x.device)
    else:
        valid = mask
        x = torch.where(valid, x, 0.0)
        y = torch.where(valid, y, 0.0)
        n = valid.sum(dims, keepdim=True).to(x.dtype)
    n_safe = n.clamp(min=1.0)

    def centred(v):
        a = v.sum(dims, keepdim=True) / n_safe
        d = torch.where(valid, v - a, 0.0)
        return a, d, d.sum(dims, keepdim=True) / n_safe

    a_x, dx, r_x = centred(x)
    a_y, dy, r_y = centred(y)
    m2_x = ((dx * dx).sum(dims, keepdim=True) - n * r_x * r_x).clamp(min=0.0)
    m2_y = ((dy * dy).sum(dims, keepdim=True) - n * r_y * r_y).clamp(min=0.0)
    c_xy = (dx * dy).sum(dims, keepdim=True) - n * r_x * r_y
    return n, a_x + r_x, a_y + r_y, (a_x - a_y) + (r_x - r_y), m2_x, m2_y, c_xy


def _ccc_from_moments(m: Moments, unbiased: bool) -> torch.Tensor:
    n, _, _, mean_diff, m2_x, m2_y, c_xy = m
    ddof = 1.0 if unbiased else 0.0
    den = m2_x + m2_y + (n - ddof) * mean_diff**2
    ok = (n > ddof) & (den > 0)
    return torch.where(ok, 2.0 * c_xy / torch.where(ok, den, 1.0), math.nan)


def _pearson_from_moments(m: Moments) -> torch.Tensor:
    m2_x, m2_y, c_xy = m[4:]
    ok = (m2_x > 0) & (m2_y > 0)
    den = torch.where(ok, m2_x, 1.0).sqrt() * torch.where(ok, m2_y, 1.0).sqrt()
    return torch.where(ok, (c_xy / den).clamp(-1.0, 1.0), math.nan)


# ---- Triton kernels: one program per row, float32 accumulation, the maths of csrc/cpu/ccc.cpp ----


@triton_jit
def _ccc_row_moments(x_ptr, y_ptr, N, inc_x, inc_y, BLOCK_N: tl.constexpr):
    """Corrected two-pass ``(mean_x, mean_y, M2_x, M2_y, C_xy)`` of the row ``x_ptr[i * inc_x]``, ``i < N``."""
    sx = tl.zeros([BLOCK_N], dtype=tl.float32)
    sy = tl.zeros([BLOCK_N], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        sx += tl.load(x_ptr + n * inc_x, mask=n < N, other=0.0).to(tl.float32)
        sy += tl.load(y_ptr + n * inc_y, mask=n < N, other=0.0).to(tl.float32)
    mx = tl.sum(sx, axis=0) / N
    my = tl.sum(sy, axis=0) / N
    rx = tl.zeros([BLOCK_N], dtype=tl.float32)
    ry = tl.zeros([BLOCK_N], dtype=tl.float32)
    m2x = tl.zeros([BLOCK_N], dtype=tl.float32)
    m2y = tl.zeros([BLOCK_N], dtype=tl.float32)
    cxy = tl.zeros([BLOCK_N], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        dx = tl.where(n < N, tl.load(x_ptr + n * inc_x, mask=n < N, other=0.0).to(tl.float32) - mx, 0.0)
        dy = tl.where(n < N, tl.load(y_ptr + n * inc_y, mask=n < N, other=0.0).to(tl.float32) - my, 0.0)
        rx += dx
        ry += dy
        m2x += dx * dx
        m2y += dy * dy
        cxy += dx * dy
    ex = tl.sum(rx, axis=0) / N  # one refinement step of the means
    ey = tl.sum(ry, axis=0) / N
    return (mx + ex, my + ey, tl.sum(m2x, axis=0) - N * ex * ex, tl.sum(m2y, axis=0) - N * ey * ey,
            tl.sum(cxy, axis=0) - N * ex * ey)


@triton_jit
def _ccc_fwd_kernel(x_ptr, y_ptr, out_ptr, N, sxb, sxn, syb, syn, ddof, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    mx, my, m2x, m2y, cxy = _ccc_row_moments(x_ptr + b * sxb, y_ptr + b * syb, N, sxn, syn, BLOCK_N)
    d = mx - my
    den = m2x + m2y + (N - ddof) * d * d
    ok = (N > ddof) & (den > 0)
    tl.store(out_ptr + b, tl.where(ok, 2.0 * cxy / tl.where(ok, den, 1.0), float("nan")))


@triton_jit
def _ccc_bwd_kernel(g_ptr, x_ptr, y_ptr, gx_ptr, gy_ptr, N, sxb, sxn, syb, syn, ddof, BLOCK_N: tl.constexpr):
    # d ccc / d x_i = 2 (y_i - my) / D - 2 C / D^2 (2 (x_i - mx) + 2 (n - ddof) (mx - my) / n), y symmetric
    b = tl.program_id(0)
    mx, my, m2x, m2y, cxy = _ccc_row_moments(x_ptr + b * sxb, y_ptr + b * syb, N, sxn, syn, BLOCK_N)
    d = mx - my
    den = m2x + m2y + (N - ddof) * d * d
    ok = (N > ddof) & (den > 0)
    g = tl.where(ok, tl.load(g_ptr + b).to(tl.float32), 0.0)  # undefined (NaN) items: zero gradient
    den = tl.where(ok, den, 1.0)
    a = 2.0 * g / den
    c = 2.0 * g * cxy / (den * den)
    shift = 2.0 * (N - ddof) * d / N
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        dx = tl.load(x_ptr + b * sxb + n * sxn, mask=n < N, other=0.0).to(tl.float32) - mx
        dy = tl.load(y_ptr + b * syb + n * syn, mask=n < N, other=0.0).to(tl.float32) - my
        tl.store(gx_ptr + b * N + n, a * dy - c * (2.0 * dx + shift), mask=n < N)
        tl.store(gy_ptr + b * N + n, a * dx - c * (2.0 * dy - shift), mask=n < N)


def _block_n(n: int) -> int:
    return min(1024, max(16, triton.next_power_of_2(n)))


@torch.library.custom_op("kdekit::ccc_triton", mutates_args=())
def ccc_triton(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Triton twin of ``torch.ops.kdekit.ccc``: CCC of ``(B, N)`` rows of any float dtype and strides, ``(B,)``
    float32 (float32 accumulation; NaN where undefined, zero gradient there)."""
    out = torch.empty(x.shape[0], device=x.device, dtype=torch.float32)
    _ccc_fwd_kernel[(x.shape[0],)](x, y, out, x.shape[1], *x.stride(), *y.stride(), float(unbiased),
                                   BLOCK_N=_block_n(x.shape[1]))
    return out


@ccc_triton.register_fake
def _(x, y, unbiased):
    return x.new_empty((x.shape[0],), dtype=torch.float32)


@torch.library.custom_op("kdekit::ccc_triton_backward", mutates_args=())
def ccc_triton_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        unbiased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(dL/dx, dL/dy)`` of :func:`ccc_triton` for ``grad = dL/dccc`` ``(B,)``, float32 ``(B, N)``."""
    gx = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    gy = torch.empty_like(gx)
    _ccc_bwd_kernel[(x.shape[0],)](grad.contiguous(), x, y, gx, gy, x.shape[1], *x.stride(), *y.stride(),
                                   float(unbiased), BLOCK_N=_block_n(x.shape[1]))
    return gx, gy


@ccc_triton_backward.register_fake
def _(grad, x, y, unbiased):
    return x.new_empty(x.shape, dtype=torch.float32), y.new_empty(y.shape, dtype=torch.float32)


register_backward_op(ccc_triton, ccc_triton_backward, differentiable=(0, 1))


def _scaled_moments(pred, target, dims: Tuple[int, ...], mask) -> Moments:
    """:func:`_moments` of ``pred / s`` and ``target / s`` in the compute dtype, ``s`` = the item's largest valid
    magnitude (a constant: CCC and Pearson do not change, and no square overflows)."""
    ct = compute_dtype(pred.dtype)
    x, y = pred.to(ct), target.to(ct)
    with torch.no_grad():
        mag = torch.maximum(x.abs(), y.abs())
        if mask is not None:
            mag = torch.where(mask, mag, 0.0)
        s = mag.amax(dims, keepdim=True)
        s = torch.where(torch.isfinite(s) & (s > 0), s, 1.0)
    return _moments(x / s, y / s, dims, mask)


def ccc(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = 0,
    mask: Optional[torch.Tensor] = None,
    unbiased: bool = False,
    keepdim: bool = False,
) -> torch.Tensor:
    """Lin's concordance correlation coefficient along ``dim`` (default 0: the samples), population moments by
    default (Lin 1989), ``unbiased=True`` for sample moments (torchmetrics ``concordance_corrcoef``, the seed).

    Args:
        pred, target: floating tensors of one shape, dtype and device.
        dim: dim(s) reduced (default 0: ``(N,)`` -> one value, ``(N, d)`` -> one per column); the rest are batch dims.
        mask: optional bool tensor of ``pred``'s shape, True = valid.
        unbiased: False = population moments (ddof 0); True = ddof 1.
        keepdim: keep the reduced dims with size 1.

    Returns:
        CCC in ``[-1, 1]``, shape of ``pred`` without ``dim``, dtype of ``pred``; NaN where undefined (module doc).

    Example:
        >>> import torch
        >>> from kdekit import ccc
        >>> pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> ccc(pred, pred)
        tensor(1.)
        >>> ccc(pred, pred + 1)  # a shift lowers the CCC: 2 * 1.25 / (1.25 + 1.25 + 1)
        tensor(0.7143)
        >>> ccc(pred, pred + 1, unbiased=True)  # sample moments: 2 * 5/3 / (5/3 + 5/3 + 1)
        tensor(0.7692)
        >>> two = torch.tensor([[1.0, 0.5], [2.0, 0.0], [3.0, 1.5], [4.0, 1.0]])  # (N, 2): one CCC per column
        >>> ccc(two, two + torch.tensor([0.5, 0.5]))
        tensor([0.9091, 0.7143])
    """
    dims, mask = _check_pair(pred, target, dim, mask)
    if mask is None and not needs_grad(pred, target):
        backend = select(pred, ("torch", "cpp", "cuda", "triton"))
        if backend != "torch":
            (x, y), shape = rows_over(dims, keepdim, pred, target)
            if backend == "triton":
                out = call_without_autograd(ccc_triton, x, y, unbiased)
            else:
                ct = compute_dtype(pred.dtype)
                out = call_without_autograd(torch.ops.kdekit.ccc.default, x.to(ct), y.to(ct), unbiased)
            undefined = torch.isnan(out)
            if bool(undefined.any()):  # undefined, or moments that overflowed: the scaled torch path decides
                rows = undefined.nonzero().squeeze(-1)
                m = _scaled_moments(x[rows], y[rows], (1,), None)
                out = out.index_put((rows,), _ccc_from_moments(m, unbiased).squeeze(1).to(out.dtype))
            out = out.reshape(shape)
            return out if out.dtype == pred.dtype else out.to(pred.dtype)
    m = _scaled_moments(pred, target, dims, mask)
    return finish_reduction(_ccc_from_moments(m, unbiased), dims, keepdim, pred.dtype)


def ccc_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = 0,
    mask: Optional[torch.Tensor] = None,
    unbiased: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """``1 - ccc(...)`` (population moments by default; arguments as :func:`ccc`), reduced over the remaining dims
    by ``reduction`` (``"mean"`` | ``"sum"`` | ``"none"``: per item, the shape of :func:`ccc`'s result).

    Example:
        >>> import torch
        >>> from kdekit import ccc_loss
        >>> pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> ccc_loss(pred, pred + 1)  # 1 - 5/7
        tensor(0.2857)
    """
    return reduce_loss(1.0 - ccc(pred, target, dim=dim, mask=mask, unbiased=unbiased), reduction)


def pearson(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = 0,
    mask: Optional[torch.Tensor] = None,
    keepdim: bool = False,
) -> torch.Tensor:
    """Pearson correlation along ``dim`` (default 0: the samples; = ``scipy.stats.pearsonr``), clamped to [-1, 1].

    Arguments as :func:`ccc`. NaN where fewer than 2 valid entries or either input is constant.

    Example:
        >>> import torch
        >>> from kdekit import pearson
        >>> pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> pearson(pred, 2 * pred + 1).round(decimals=4)  # scale and shift do not change it (the CCC they do)
        tensor(1.)
        >>> pearson(pred, torch.tensor([2.0, 1.0, 4.0, 3.0]))
        tensor(0.6000)
    """
    dims, mask = _check_pair(pred, target, dim, mask)
    m = _scaled_moments(pred, target, dims, mask)
    return finish_reduction(_pearson_from_moments(m), dims, keepdim, pred.dtype)


class CCCMoments:
    """Streaming, mergeable CCC/Pearson moments ``(n, mean_x, mean_y, mean_x - mean_y, M2_x, M2_y, C_xy)``, float64;
    CCC with population moments unless ``unbiased``.

    ``update`` reduces each batch along ``dim`` (same meaning and default as in :func:`ccc`: 0, the samples, so the
    state has the shape of ``ccc``'s result) and merges it with Chan et al.'s pairwise formulas; the state is
    detached (use :func:`ccc` for losses). ``merge`` adds another accumulator, ``all_reduce`` returns the
    accumulator over all ranks, ``compute`` gives the CCC of everything seen, equal to :func:`ccc` on the
    concatenated data, in the dtype of the data seen; ``reset`` starts over. (Unscaled float64 moments: values up to
    ~1e150.) With torchmetrics installed, :class:`kdekit.metrics.ConcordanceCorrCoef` wraps it as a ``Metric``.

    Example (DDP evaluation)::

        acc = CCCMoments()                       # pred/target (batch, 2): one CCC per output column
        for pred, target in loader:
            acc.update(pred, target)
        ccc_av = acc.all_reduce().compute()      # same on every rank

    Example (batches merged exactly):
        >>> import torch
        >>> from kdekit import CCCMoments, ccc
        >>> pred = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        >>> target = torch.tensor([1.5, 2.0, 3.5, 3.0, 5.5, 7.0])
        >>> acc = CCCMoments().update(pred[:2], target[:2]).update(pred[2:], target[2:])
        >>> acc.compute().round(decimals=4)
        tensor(0.9317)
        >>> ccc(pred, target).round(decimals=4)  # the same number from all the data at once
        tensor(0.9317)
    """

    def __init__(self, dim: Dims = 0, unbiased: bool = False):
        self.dim, self.unbiased = dim, unbiased
        self.state: Optional[Moments] = None
        self.dtype: Optional[torch.dtype] = None

    def reset(self) -> "CCCMoments":
        """Forget the data seen. Returns ``self``."""
        self.state, self.dtype = None, None
        return self

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> "CCCMoments":
        """Add a batch (``mask``: bool, True = valid). Returns ``self``."""
        dims, mask = _check_pair(pred, target, self.dim, mask)
        with torch.no_grad():
            m = _moments(pred.detach().to(torch.float64), target.detach().to(torch.float64), dims, mask)
            self._merge_state(tuple(t.squeeze(dims) for t in m), "the batch")
        self.dtype = pred.dtype if self.dtype is None else torch.promote_types(self.dtype, pred.dtype)
        return self

    def merge(self, other: "CCCMoments") -> "CCCMoments":
        """Add the data seen by ``other`` (which is left unchanged). Returns ``self``."""
        if not isinstance(other, CCCMoments):
            raise TypeError(f"other must be a CCCMoments, got {type(other).__name__}")
        if other.state is not None:
            if self.state is not None and other.state[0].device != self.state[0].device:
                raise ValueError(f"other is on {other.state[0].device} but this accumulator is on "
                                 f"{self.state[0].device}")
            self._merge_state(other.state, "other")
            self.dtype = other.dtype if self.dtype is None else torch.promote_types(self.dtype, other.dtype)
        return self

    def all_reduce(self, group=None) -> "CCCMoments":
        """A new accumulator holding the data of every rank in ``group`` (``self`` is unchanged, so reducing again
        after more updates stays correct). Without an initialised ``torch.distributed`` it returns a copy.

        Every rank must call it (a collective) after at least one ``update`` with the same state shape; with NCCL the
        state must be on the rank's GPU (it lives on the device of the data given to ``update``).
        """
        out = CCCMoments(self.dim, self.unbiased)
        out.dtype = self.dtype
        if self.state is None:
            raise RuntimeError("CCCMoments.all_reduce() before any update(): every rank needs a state of one shape")
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            out.state = tuple(t.clone() for t in self.state)
            return out
        # round 1: global n and means; round 2: each rank's M2/C about the global means (exact, order-independent)
        n, mean_x, mean_y, mean_diff, m2_x, m2_y, c_xy = self.state
        first = torch.stack([n, n * mean_x, n * mean_y, n * mean_diff])
        torch.distributed.all_reduce(first, group=group)
        n_all = first[0]
        g_x, g_y, g_diff = first[1:] / n_all.clamp(min=1.0)
        dx, dy = mean_x - g_x, mean_y - g_y
        second = torch.stack([m2_x + n * dx * dx, m2_y + n * dy * dy, c_xy + n * dx * dy])
        torch.distributed.all_reduce(second, group=group)
        out.state = (n_all, g_x, g_y, g_diff, second[0], second[1], second[2])
        return out

    def compute(self, unbiased: Optional[bool] = None) -> torch.Tensor:
        """CCC of all data seen (state shape, the data's dtype); ``unbiased`` overrides the accumulator's."""
        unbiased = self.unbiased if unbiased is None else unbiased
        return _ccc_from_moments(self._require_state(), unbiased).to(self.dtype)

    def pearson(self) -> torch.Tensor:
        """Pearson correlation of all data seen (state shape, the data's dtype)."""
        return _pearson_from_moments(self._require_state()).to(self.dtype)

    def _require_state(self) -> Moments:
        if self.state is None:
            raise RuntimeError("CCCMoments has seen no data: call update() first")
        return self.state

    def _merge_state(self, b: Moments, what: str) -> None:
        if self.state is None:
            self.state = tuple(t.clone() for t in b)
            return
        if b[0].shape != self.state[0].shape:
            raise ValueError(f"{what} reduces to shape {tuple(b[0].shape)} but this accumulator has state shape "
                             f"{tuple(self.state[0].shape)} (dim={self.dim!r})")
        n_a, mx_a, my_a, md_a, m2x_a, m2y_a, c_a = self.state
        n_b, mx_b, my_b, md_b, m2x_b, m2y_b, c_b = b
        n = n_a + n_b
        f = n_b / n.clamp(min=1.0)  # weight of b in the merged means
        dx, dy = mx_b - mx_a, my_b - my_a
        w = n_a * f  # = n_a n_b / n
        self.state = (n, mx_a + dx * f, my_a + dy * f, md_a + (md_b - md_a) * f, m2x_a + m2x_b + dx * dx * w,
                      m2y_a + m2y_b + dy * dy * w, c_a + c_b + dx * dy * w)
