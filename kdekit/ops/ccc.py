"""Concordance (Lin's CCC) and Pearson correlation, batched, masked, differentiable; streaming moments for DDP.

Conventions (sums over the valid entries along ``dim``; ``n`` = their count)::

    mean_x = sum(x) / n,  M2_x = sum((x - mean_x)^2),  C_xy = sum((x - mean_x)(y - mean_y))
    ccc     = 2 C_xy / (M2_x + M2_y + (n - ddof) (mean_x - mean_y)^2)     (= 2 s_xy / (s_x^2 + s_y^2 + (mu_x - mu_y)^2))
    pearson = C_xy / sqrt(M2_x M2_y)

``ddof = 0`` (population moments, Lin 1989, audmetric) by default; ``unbiased=True`` sets ``ddof = 1`` and equals
``torchmetrics.functional.concordance_corrcoef`` and the seed code (MIA ``metrics.py``); the two differ by O(1/n).

- Shapes: ``pred`` and ``target`` have the same shape; ``dim`` (int or tuple) is reduced, every other dim is a batch
  dim. ``mask`` (bool, same shape) marks valid entries; masked entries may hold anything, NaN included.
- Undefined results are NaN, per item, never an exception: fewer than ``ddof + 1`` valid entries, a zero CCC
  denominator (both inputs constant and equal), or a constant input for Pearson. Such items get zero gradients, so a
  ``nanmean`` loss over a batch stays finite. NaN in a *valid* entry gives NaN for that item only.
- Numerics: corrected two-pass (inputs are centred before any product, see ``_moments``), so large offsets do not
  cancel and constant inputs give zero variance. float16/bfloat16 are computed in float32 and returned in the input
  dtype.
- :class:`CCCMoments` accumulates the moments in float64 with Chan et al.'s pairwise merge, so CCC over data split
  across batches or ranks equals CCC over all of it (not an average of per-part CCCs).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from .._backend import select
from ._utils import check_float_tensor, check_same, compute_dtype

Dims = Union[int, Sequence[int]]
Moments = Tuple[torch.Tensor, ...]  # (n, mean_x, mean_y, mean_x - mean_y, M2_x, M2_y, C_xy)


def reduction_dims(dim: Dims, x: torch.Tensor, name: str) -> Tuple[int, ...]:
    """``dim`` (int or sequence of ints) as sorted non-negative dims of ``x``; raises on bad or empty dims."""
    dims = [dim] if isinstance(dim, int) else dim
    if isinstance(dim, bool) or not isinstance(dims, Sequence) or not dims:
        raise TypeError(f"dim must be an int or a non-empty tuple of ints, got {dim!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"dim must be an int or a non-empty tuple of ints, got {dim!r}")
        if not -x.dim() <= d < x.dim():
            raise ValueError(f"dim {d} is out of range for {name} of shape {tuple(x.shape)}")
        out.append(d % x.dim())
    if len(set(out)) != len(out):
        raise ValueError(f"dim has repeated entries: {dim!r}")
    if math.prod(x.shape[d] for d in out) == 0:
        raise ValueError(f"{name} has no entries along dim {dim!r} (shape {tuple(x.shape)})")
    return tuple(sorted(out))


def check_mask(mask: Optional[torch.Tensor], name: str, x: torch.Tensor) -> Optional[torch.Tensor]:
    """Raise unless ``mask`` is None or a bool tensor with the shape and device of ``x`` (called ``name``)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid), got {mask.dtype}")
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but {name} has shape {tuple(x.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but {name} is on {x.device}")
    return mask


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


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record this call. The fused metric kernels serve evaluation (no grad); losses take the
    torch path, which also supports higher-order gradients."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rows_over(dims: Tuple[int, ...], *tensors: torch.Tensor):
    """Tensors of one shape as contiguous ``(batch, reduced)`` rows (the reduced ``dims`` flattened last), for the
    fused kernels, and the keepdim shape of a per-row result."""
    shape = tensors[0].shape
    batch = [d for d in range(len(shape)) if d not in dims]
    n = math.prod(shape[d] for d in dims)
    rows = tuple(t.permute(*batch, *dims).reshape(-1, n).contiguous() for t in tensors)
    return rows, [1 if d in dims else s for d, s in enumerate(shape)]


def finish_reduction(out: torch.Tensor, dims: Tuple[int, ...], keepdim: bool, dtype: torch.dtype) -> torch.Tensor:
    """Drop the size-1 reduced ``dims`` of ``out`` unless ``keepdim``; cast to the output ``dtype``."""
    return (out if keepdim else out.squeeze(dims)).to(dtype)


def ccc(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    unbiased: bool = False,
    keepdim: bool = False,
) -> torch.Tensor:
    """Lin's concordance correlation coefficient of ``pred`` and ``target`` along ``dim``.

    Args:
        pred, target: floating tensors of one shape, dtype and device.
        dim: dim(s) reduced; the rest are batch dims.
        mask: optional bool tensor of ``pred``'s shape, True = valid.
        unbiased: False = population moments (Lin); True = ddof 1 (torchmetrics ``ConcordanceCorrCoef``, seed).
        keepdim: keep the reduced dims with size 1.

    Returns:
        CCC in ``[-1, 1]``, shape of ``pred`` without ``dim``, dtype of ``pred``; NaN where undefined (module doc).
    """
    dims, mask = _check_pair(pred, target, dim, mask)
    ct = compute_dtype(pred.dtype)
    if mask is None and not needs_grad(pred, target) and select(pred, ("torch", "cpp")) == "cpp":
        (x, y), kept = rows_over(dims, pred.to(ct), target.to(ct))
        out = torch.ops.kdekit.ccc(x, y, unbiased).reshape(kept)  # fused moments, float64 accumulation
        return finish_reduction(out, dims, keepdim, pred.dtype)
    m = _moments(pred.to(ct), target.to(ct), dims, mask)
    return finish_reduction(_ccc_from_moments(m, unbiased), dims, keepdim, pred.dtype)


def ccc_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    unbiased: bool = False,
    keepdim: bool = False,
) -> torch.Tensor:
    """``1 - ccc(...)`` per item (same arguments and shape as :func:`ccc`); average it yourself, e.g. over A/V."""
    return 1.0 - ccc(pred, target, dim=dim, mask=mask, unbiased=unbiased, keepdim=keepdim)


def pearson(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    keepdim: bool = False,
) -> torch.Tensor:
    """Pearson correlation of ``pred`` and ``target`` along ``dim`` (= ``scipy.stats.pearsonr``), clamped to [-1, 1].

    Arguments as :func:`ccc`. NaN where fewer than 2 valid entries or either input is constant.
    """
    dims, mask = _check_pair(pred, target, dim, mask)
    ct = compute_dtype(pred.dtype)
    m = _moments(pred.to(ct), target.to(ct), dims, mask)
    return finish_reduction(_pearson_from_moments(m), dims, keepdim, pred.dtype)


class CCCMoments:
    """Streaming, mergeable CCC/Pearson moments ``(n, mean_x, mean_y, mean_x - mean_y, M2_x, M2_y, C_xy)``, float64.

    ``update`` reduces each batch along ``dim`` (same meaning as in :func:`ccc`, so the state has the shape of
    ``ccc``'s result) and merges it with Chan et al.'s pairwise formulas; the state is detached (use :func:`ccc`
    for losses). ``merge`` adds another accumulator, ``all_reduce`` returns the accumulator over all ranks,
    ``compute`` gives the CCC of everything seen, equal to :func:`ccc` on the concatenated data.

    Example (DDP evaluation)::

        acc = CCCMoments(dim=0)                  # pred/target (batch, 2): one CCC per output column
        for pred, target in loader:
            acc.update(pred, target)
        ccc_av = acc.all_reduce().compute()      # same on every rank
    """

    def __init__(self, dim: Dims = -1):
        self.dim = dim
        self.state: Optional[Moments] = None

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> "CCCMoments":
        """Add a batch (``mask``: bool, True = valid). Returns ``self``."""
        dims, mask = _check_pair(pred, target, self.dim, mask)
        with torch.no_grad():
            m = _moments(pred.detach().to(torch.float64), target.detach().to(torch.float64), dims, mask)
            self._merge_state(tuple(t.squeeze(dims) for t in m), "the batch")
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
        return self

    def all_reduce(self, group=None) -> "CCCMoments":
        """A new accumulator holding the data of every rank in ``group`` (``self`` is unchanged, so reducing again
        after more updates stays correct). Without an initialised ``torch.distributed`` it returns a copy.

        Every rank must call it (a collective) after at least one ``update`` with the same state shape; with NCCL the
        state must be on the rank's GPU (it lives on the device of the data given to ``update``).
        """
        out = CCCMoments(self.dim)
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

    def compute(self, unbiased: bool = False) -> torch.Tensor:
        """CCC of all data seen (float64, state shape); ``unbiased`` as in :func:`ccc`."""
        return _ccc_from_moments(self._require_state(), unbiased)

    def pearson(self) -> torch.Tensor:
        """Pearson correlation of all data seen (float64, state shape)."""
        return _pearson_from_moments(self._require_state())

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
