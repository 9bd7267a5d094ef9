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
- **Validation:** ``jsd``/``kl`` raise ``ValueError`` on a negative, NaN or infinite valid entry of ``p`` or ``q``
  (their logs would be NaN). The check synchronises with the device; ``validate=False`` skips it. ``tvd`` accepts
  any finite reals (e.g. KDE grids with negative lobes) and does not check.
- Shapes: ``p``, ``q`` (and ``mask``, bool) have one shape; ``dim`` (int or tuple, e.g. ``(-2, -1)`` for k x k
  tables) is reduced, the rest are batch dims. Masked entries are treated as 0 in both (they may hold NaN).
  float16/bfloat16 are computed in float32 and returned in the input dtype.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._utils import check_float_tensor, check_same, compute_dtype
from .._backend import select
from .ccc import Dims, check_mask, finish_reduction, needs_grad, reduction_dims, rows_over


def _prepare(p, q, dim: Dims, mask, validate: bool) -> tuple:
    """Checked ``p``, ``q`` in the compute dtype with masked entries set to 0, the reduced dims, the output dtype."""
    check_float_tensor("p", p, min_ndim=1)
    check_float_tensor("q", q)
    check_same("p", p, "q", q)
    dims = reduction_dims(dim, p, "p")
    mask = check_mask(mask, "p", p)
    out_dtype = p.dtype
    p, q = p.to(compute_dtype(out_dtype)), q.to(compute_dtype(out_dtype))
    if mask is not None:
        p, q = torch.where(mask, p, 0.0), torch.where(mask, q, 0.0)
    if validate:
        for name, t in (("p", p), ("q", q)):
            bad = ~(torch.isfinite(t) & (t >= 0))
            if bad.any():
                raise ValueError(f"{name} must be finite and non-negative (probabilities); got "
                                 f"{int(bad.sum())} bad entries, first {t[bad][0].item()!r}")
    return p, q, dims, out_dtype


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


def _fused(p: torch.Tensor, q: torch.Tensor, dims, kind: str) -> Optional[torch.Tensor]:
    """``torch.ops.kdekit.divergence`` (one pass, float64 accumulation, keepdim shape) when the ``cpp`` backend is
    selected and no gradient is recorded (see :func:`~kdekit.ops.ccc.needs_grad`), else None."""
    if needs_grad(p, q) or select(p, ("torch", "cpp")) != "cpp":
        return None
    (p2, q2), kept = rows_over(dims, p, q)
    return torch.ops.kdekit.divergence(p2, q2, kind).reshape(kept)


def kl(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    base: Optional[float] = None,
    keepdim: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """KL divergence ``KL(p || q) = sum p log(p / q)`` along ``dim`` (= ``scipy.special.rel_entr(p, q).sum()``).

    ``inf`` where some ``q_i = 0 < p_i``. Shape of ``p`` without ``dim``, dtype of ``p``. See the module doc.
    """
    p, q, dims, out_dtype = _prepare(p, q, dim, mask, validate)
    out = _fused(p, q, dims, "kl")
    if out is None:
        out = _rel_entr(p, q).sum(dims, keepdim=True)
    return finish_reduction(out * _log_scale(base), dims, keepdim, out_dtype)


def jsd(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    base: Optional[float] = None,
    keepdim: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Jensen-Shannon divergence along ``dim`` (= ``scipy.spatial.distance.jensenshannon(p, q, base=base) ** 2``
    for normalised inputs). Natural log by default; ``base=2`` gives bits. Symmetric, finite, >= 0.
    """
    p, q, dims, out_dtype = _prepare(p, q, dim, mask, validate)
    out = _fused(p, q, dims, "jsd")
    if out is None:
        m = 0.5 * (p + q)
        out = (0.5 * (_rel_entr(p, m) + _rel_entr(q, m)).sum(dims, keepdim=True)).clamp(min=0.0)
    return finish_reduction(out * _log_scale(base), dims, keepdim, out_dtype)


def tvd(
    p: torch.Tensor,
    q: torch.Tensor,
    dim: Dims = -1,
    mask: Optional[torch.Tensor] = None,
    keepdim: bool = False,
) -> torch.Tensor:
    """Total variation distance ``sum |p - q| / 2`` along ``dim`` (in [0, 1] for probability vectors).

    Not the seed's ``total_variation_1d``, which is ``sum (p - q)^2`` (a squared L2 distance). The gradient at
    ``p_i = q_i`` is 0 (``torch.abs``'s subgradient).
    """
    p, q, dims, out_dtype = _prepare(p, q, dim, mask, validate=False)
    return finish_reduction(0.5 * (p - q).abs().sum(dims, keepdim=True), dims, keepdim, out_dtype)
