"""Jensen-Shannon divergence, Kullback-Leibler divergence and total variation distance, batched and differentiable.

Definitions (sums over ``dim``; ``m = (p + q) / 2``; ``log`` natural unless ``base`` is given)::

    kl(p, q)  = sum p log(p / q)
    jsd(p, q) = (kl(p, m) + kl(q, m)) / 2          = scipy.spatial.distance.jensenshannon(p, q, base) ** 2
    tvd(p, q) = sum |p - q| / 2

- **Zeros, exactly:** ``0 log(0 / x) = 0`` for every ``x >= 0`` (as ``torch.xlogy``/``scipy.special.rel_entr``), so
  zero entries need no epsilon. ``kl`` is ``inf`` where ``q = 0 < p``. The seed (MIA ``metrics.py``) instead replaced
  zeros by 1e-8 *in place* (mutating the caller's tensors) before a natural-log JSD; that shifts the value by
  O(1e-8 log 1e-8) per zero bin. These functions never modify their inputs.
- **Gradients** are exact wherever the entry being differentiated is positive, also where the other argument is 0
  (e.g. a prediction against a target with empty cells). At an entry ``p_i = 0`` the true derivative is ``-inf``;
  autograd returns the finite value obtained by holding ``0 log 0 = 0`` constant (``p_i``'s own term contributes no
  gradient). Train on strictly positive predictions (softmax) when that matters.
- **No normalisation:** inputs are used as given (unlike ``jensenshannon``/``scipy.stats.entropy``, which divide by
  the sum). For probability vectors ``0 <= jsd <= log 2`` (1 bit with ``base=2``) and ``0 <= tvd <= 1``. ``jsd`` is
  clamped at 0 against rounding (each bin's term is non-negative for any non-negative inputs); ``kl`` is not, since
  it can be negative for unnormalised inputs.
- **Validation:** an item of ``jsd``/``kl`` with a negative, NaN or infinite valid entry in ``p`` or ``q`` is NaN
  (every backend flags it; its gradient is unspecified). With ``validate=True`` (default) such an item raises
  ``ValueError`` naming the argument: one check of the result for NaN, which synchronises with the device; only when
  it finds one are the inputs scanned for the message. ``tvd`` accepts any reals (e.g. KDE grids with negative
  lobes) and does not check.
- Shapes: ``p``, ``q`` (and ``mask``, bool) have one shape; ``dim`` (int or tuple, e.g. ``(-2, -1)`` for k x k
  tables) is reduced, the rest are batch dims. Masked entries are treated as 0 in both (they may hold NaN).
  float16/bfloat16 are computed in float32 and returned in the input dtype.
- Backends (:func:`kdekit._backend.select`): without a recorded gradient, one fused kernel per call: ``cpp``
  (``torch.ops.kdekit.divergence`` on the CPU: float64 inputs in float64; float32 inputs get float32 per-entry terms,
  summed in float64), ``cuda`` (the same op on CUDA tensors: every dtype summed in float64) or ``triton``
  (:func:`divergence_triton`, float32). With a gradient the torch path runs (higher-order gradients included).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._backend import select
from ._checks import check_float_tensor, check_mask, check_same, compute_dtype
from ._reduction import Dims, finish_reduction, needs_grad, reduction_dims, rows_over
from ._registration import call_without_autograd, register_backward_op
from ._triton import tl, triton, triton_jit


KINDS = ("kl", "jsd", "tvd")  # the kernels' kind argument, in their numbering


def _log_scale(base: Optional[float]) -> float:
    if base is None:
        return 1.0
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not (base > 0 and base != 1) \
            or not math.isfinite(base):
        raise ValueError(f"base must be a finite number > 0 and != 1 (or None for natural log), got {base!r}")
    return 1.0 / math.log(base)


def _rel_entr(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``p log(p / q)`` with ``0 log(0 / q) = 0`` (also at ``q = 0``) and finite gradients at ``p = 0``."""
    nonzero = p != 0  # not p > 0: an unchecked negative entry must give NaN, not a silent 0
    ratio = torch.where(nonzero, p / torch.where(nonzero, q, 1.0), 1.0)
    return torch.xlogy(p, ratio)


def _reference(kind: str, p: torch.Tensor, q: torch.Tensor, dims) -> torch.Tensor:
    """The torch path (differentiable to any order): per-item value with the reduced dims kept; kl/jsd items with a
    negative or non-finite entry are NaN, like the kernels'."""
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(dims, keepdim=True)
    if kind == "kl":
        out = _rel_entr(p, q).sum(dims, keepdim=True)
    else:
        m = 0.5 * (p + q)
        out = (0.5 * (_rel_entr(p, m) + _rel_entr(q, m)).sum(dims, keepdim=True)).clamp(min=0.0)
    ok = ((p >= 0) & (p < math.inf) & (q >= 0) & (q < math.inf)).all(dims, keepdim=True)
    return torch.where(ok, out, math.nan)


def _raise_on_bad_entries(p: torch.Tensor, q: torch.Tensor) -> None:
    for name, t in (("p", p), ("q", q)):
        bad = ~((t >= 0) & (t < math.inf))
        if bad.any():
            raise ValueError(f"{name} must be finite and non-negative (probabilities); got {int(bad.sum())} bad "
                             f"entries, first {t[bad][0].item()!r}")


def _divergence(kind: str, p, q, dim: Dims, *, mask, keepdim: bool, validate: bool, scale: float = 1.0):
    """``kind`` of ``p`` and ``q`` reduced over ``dim``: checks, backend choice, validation, output shape/dtype."""
    check_float_tensor("p", p, min_ndim=1)
    check_float_tensor("q", q)
    check_same("p", p, "q", q)
    dims = reduction_dims(dim, p, "p")
    if check_mask(mask, "p", p) is not None:  # masked entries count as 0 in both (and may hold NaN)
        p, q = torch.where(mask, p, 0.0), torch.where(mask, q, 0.0)
    ct = compute_dtype(p.dtype)
    backend = "torch" if needs_grad(p, q) else select(p, ("torch", "cpp", "cuda", "triton"))
    if backend == "torch":
        out = finish_reduction(_reference(kind, p.to(ct), q.to(ct), dims), dims, keepdim, ct)
    else:
        (p2, q2), shape = rows_over(dims, keepdim, p, q)
        if backend == "triton":
            out = call_without_autograd(divergence_triton, p2, q2, kind)
        else:
            if p2.dtype != ct:
                p2, q2 = p2.to(ct), q2.to(ct)
            out = call_without_autograd(torch.ops.kdekit.divergence.default, p2, q2, kind)
        out = out.reshape(shape)
    if validate and kind != "tvd" and math.isnan(out.detach().sum()):  # NaN: a bad entry (or, rarely, inf - inf)
        _raise_on_bad_entries(p, q)
    out = out if scale == 1.0 else out * scale
    return out if out.dtype == p.dtype else out.to(p.dtype)


# ---- Triton kernels: BLOCK_B rows per program, float32; the maths of csrc/cpu/divergence.cpp ----


@triton_jit
def _entry_terms(p, q, KIND: tl.constexpr):
    """Per-entry terms of kind KIND (0 kl, 1 jsd, 2 tvd); NaN where p or q is negative or non-finite (kl, jsd)."""
    if KIND == 2:
        t = 0.5 * tl.abs(p - q)
    else:
        if KIND == 0:
            t = tl.where(q > 0, p * tl.log(tl.where(p > 0, p, 1.0) / tl.where(q > 0, q, 1.0)), float("inf"))
            t = tl.where(p != 0, t, 0.0)
        else:
            s = tl.where(p + q > 0, p + q, 1.0)  # 2 m
            t = 0.5 * (p * tl.log(tl.where(p > 0, 2.0 * p / s, 1.0)) + q * tl.log(tl.where(q > 0, 2.0 * q / s, 1.0)))
        ok = (p >= 0) & (p < float("inf")) & (q >= 0) & (q < float("inf"))
        t = tl.where(ok, t, float("nan"))
    return t


@triton_jit
def _row_values(p_ptr, q_ptr, rows, B, K, spb, spk, sqb, sqk, KIND: tl.constexpr, BLOCK_B: tl.constexpr,
                BLOCK_K: tl.constexpr):
    """Unclamped value of each of ``rows`` (a BLOCK_B vector; NaN for a flagged row)."""
    acc = tl.zeros([BLOCK_B], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        m = (rows < B)[:, None] & (k < K)[None, :]
        p = tl.load(p_ptr + rows[:, None] * spb + k[None, :] * spk, mask=m, other=0.0).to(tl.float32)
        q = tl.load(q_ptr + rows[:, None] * sqb + k[None, :] * sqk, mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(_entry_terms(p, q, KIND), axis=1)
    return acc


@triton_jit
def _div_fwd_kernel(p_ptr, q_ptr, out_ptr, B, K, spb, spk, sqb, sqk, KIND: tl.constexpr, BLOCK_B: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    v = _row_values(p_ptr, q_ptr, rows, B, K, spb, spk, sqb, sqk, KIND, BLOCK_B, BLOCK_K)
    if KIND == 1:
        v = tl.where(v < 0, 0.0, v)  # jsd is clamped at 0 (NaN stays NaN)
    tl.store(out_ptr + rows, v, mask=rows < B)


@triton_jit
def _div_bwd_kernel(g_ptr, p_ptr, q_ptr, gp_ptr, gq_ptr, B, K, spb, spk, sqb, sqk, KIND: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    # kl:  d/dp = log(p / q) + 1, d/dq = -p / q (0 where p = 0)
    # jsd: d/dp = (log(p / m) + 1 - p / 2m)[p > 0] / 2 - (q / 2m)[q > 0] / 2, q symmetric
    # tvd: d/dp = sign(p - q) / 2 = -d/dq.  Zero for flagged rows and where jsd is clamped.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    g = tl.load(g_ptr + rows, mask=rows < B, other=0.0).to(tl.float32)
    if KIND != 2:
        v = _row_values(p_ptr, q_ptr, rows, B, K, spb, spk, sqb, sqk, KIND, BLOCK_B, BLOCK_K)
        live = v == v
        if KIND == 1:
            live = live & (v >= 0)
        g = tl.where(live, g, 0.0)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        m = (rows < B)[:, None] & (k < K)[None, :]
        p = tl.load(p_ptr + rows[:, None] * spb + k[None, :] * spk, mask=m, other=0.0).to(tl.float32)
        q = tl.load(q_ptr + rows[:, None] * sqb + k[None, :] * sqk, mask=m, other=0.0).to(tl.float32)
        if KIND == 2:
            dp = tl.where(p > q, 0.5, tl.where(p < q, -0.5, 0.0))
            dq = -dp
        elif KIND == 0:
            q1 = tl.where(p > 0, q, 1.0)
            dp = tl.where(p > 0, tl.log(tl.where(p > 0, p, 1.0) / q1) + 1.0, 0.0)
            dq = tl.where(p > 0, -p / q1, 0.0)
        else:
            s = tl.where(p + q > 0, p + q, 1.0)  # 2 m
            lp = tl.log(tl.where(p > 0, 2.0 * p / s, 1.0)) + 1.0 - p / s
            lq = tl.log(tl.where(q > 0, 2.0 * q / s, 1.0)) + 1.0 - q / s
            dp = 0.5 * (tl.where(p > 0, lp, 0.0) - tl.where(q > 0, q / s, 0.0))
            dq = 0.5 * (tl.where(q > 0, lq, 0.0) - tl.where(p > 0, p / s, 0.0))
        out = rows[:, None] * K + k[None, :]
        tl.store(gp_ptr + out, tl.where(g[:, None] != 0, g[:, None] * dp, 0.0), mask=m)
        tl.store(gq_ptr + out, tl.where(g[:, None] != 0, g[:, None] * dq, 0.0), mask=m)


def _launch_div(kernel, first_args, p: torch.Tensor, q: torch.Tensor, kind: str, out_args) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    B, K = p.shape
    block_k = min(64, max(16, triton.next_power_of_2(K)))
    block_b = max(1, 1024 // block_k)
    kernel[(triton.cdiv(B, block_b),)](*first_args, p, q, *out_args, B, K, *p.stride(), *q.stride(),
                                       KIND=KINDS.index(kind), BLOCK_B=block_b, BLOCK_K=block_k)


@torch.library.custom_op("kdekit::divergence_triton", mutates_args=())
def divergence_triton(p: torch.Tensor, q: torch.Tensor, kind: str) -> torch.Tensor:
    """Triton twin of ``torch.ops.kdekit.divergence`` (kind ``kl``, ``jsd`` or ``tvd``) over ``(B, K)`` rows of any
    float dtype and strides: ``(B,)`` float32, NaN for a kl/jsd row with a negative or non-finite entry."""
    out = torch.empty(p.shape[0], device=p.device, dtype=torch.float32)
    _launch_div(_div_fwd_kernel, (), p, q, kind, (out,))
    return out


@divergence_triton.register_fake
def _(p, q, kind):
    return p.new_empty((p.shape[0],), dtype=torch.float32)


@torch.library.custom_op("kdekit::divergence_triton_backward", mutates_args=())
def divergence_triton_backward(grad: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
                               kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(dL/dp, dL/dq)`` of :func:`divergence_triton` for ``grad = dL/dout`` ``(B,)``, float32 ``(B, K)``."""
    gp = torch.empty(p.shape, device=p.device, dtype=torch.float32)
    gq = torch.empty_like(gp)
    _launch_div(_div_bwd_kernel, (grad.contiguous(),), p, q, kind, (gp, gq))
    return gp, gq


@divergence_triton_backward.register_fake
def _(grad, p, q, kind):
    return p.new_empty(p.shape, dtype=torch.float32), q.new_empty(q.shape, dtype=torch.float32)


register_backward_op(divergence_triton, divergence_triton_backward, differentiable=(0, 1))


def kl(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    *,
    mask: Optional[torch.Tensor] = None,
    base: Optional[float] = None,
    keepdim: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """KL divergence ``KL(p || q) = sum p log(p / q)`` along ``dim`` (= ``scipy.special.rel_entr(p, q).sum()``).

    ``inf`` where some ``q_i = 0 < p_i``. Shape of ``p`` without ``dim``, dtype of ``p``. See the module doc.
    """
    return _divergence("kl", p, q, dim, mask=mask, keepdim=keepdim, validate=validate, scale=_log_scale(base))


def jsd(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    *,
    mask: Optional[torch.Tensor] = None,
    base: Optional[float] = None,
    keepdim: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Jensen-Shannon divergence along ``dim`` (= ``scipy.spatial.distance.jensenshannon(p, q, base=base) ** 2``
    for normalised inputs). Natural log by default; ``base=2`` gives bits. Symmetric, finite, >= 0.
    """
    return _divergence("jsd", p, q, dim, mask=mask, keepdim=keepdim, validate=validate, scale=_log_scale(base))


def tvd(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    *,
    mask: Optional[torch.Tensor] = None,
    keepdim: bool = False,
) -> torch.Tensor:
    """Total variation distance ``sum |p - q| / 2`` along ``dim`` (in [0, 1] for probability vectors).

    Not the seed's ``total_variation_1d``, which is ``sum (p - q)^2`` (a squared L2 distance). The gradient at
    ``p_i = q_i`` is 0 (``torch.abs``'s subgradient).
    """
    return _divergence("tvd", p, q, dim, mask=mask, keepdim=keepdim, validate=False)
