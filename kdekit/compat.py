"""Drop-in replacements for ``kde_diffusion.kde1d`` / ``kde_diffusion.kde2d``.

Same signatures and return values: ``kde1d(x, n=1024, limits=None) -> (density, grid, bandwidth)`` and
``kde2d(x, y, n=256, limits=None) -> (density, (xgrid, ygrid), bandwidth)``, with kde_diffusion's limit forms
(``None``, ``c`` for ``(-c, c)``, ``(lo, hi)`` with ``None`` entries; per axis in 2-D) and its grid rule (``n`` rounded
up to a power of two, also for a float ``n``). Lists/numpy arrays in -> numpy float64 out; torch tensors in -> torch
tensors out (float16/bfloat16/float32/float64 kept).

- Where kde_diffusion converges the results are equal (float64, to ~1e-15).
- Bad input raises ``ValueError`` as kde_diffusion does: NaN or infinite points, no points, x and y of different
  lengths (kdekit's own :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d` masks such items instead).
- Where kde_diffusion raises ``ValueError('Bandwidth optimization did not converge.')`` these return the fallback
  result (:class:`~kdekit.ops.diffusion_kde.KDEStatus`: a bandwidth between one bin and the range) with one
  ``RuntimeWarning`` naming the rule; ``strict=True`` raises kde_diffusion's ``ValueError`` instead, for code that
  relies on ``except ValueError``. A density that overflows (points spread over less than ~1e-150) is returned as
  kde_diffusion returns it (inf) with a ``RuntimeWarning``.
- Torch inputs that require grad keep their graph: the density depends differentiably on the data-derived default
  limits (scaling and grid); it has no gradient in the point positions themselves (hard histogram), which a
  ``UserWarning`` says. Train through :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d` with ``histogram="soft"``.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from .ops.diffusion_kde import KDEStatus, diffusion_kde1d, diffusion_kde2d

__all__ = ["kde1d", "kde2d"]

NOT_CONVERGED = "Bandwidth optimization did not converge."  # kde_diffusion's message


def _as_tensor(name: str, v) -> tuple:
    """(1-D tensor, was_torch); raises ValueError where kde_diffusion does."""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        arr = np.asarray(v)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.float64))
    if t.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: a density needs at least one point")
    if not bool(torch.isfinite(t.detach()).all()):
        bad = int((~torch.isfinite(t.detach())).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s) (kde_diffusion raises too); drop them, or mask "
                         "them with kdekit.diffusion_kde2d(..., mask=...)")
    return t, isinstance(v, torch.Tensor)


def _grid(n) -> int:
    """kde_diffusion's grid size: ``2 ** ceil(log2(n))`` for a real ``n >= 2``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 2:
        raise ValueError(f"n must be a finite number >= 2, got {n!r}")
    return 1 << math.ceil(math.log2(n))


def _graph_limits(t: torch.Tensor, spec, margin: float):
    """The limits of one axis as a (2,) tensor whose data-derived ends (kde_diffusion's range +- margin) keep the
    graph of ``t``; None when ``spec`` fixes both ends (nothing to differentiate)."""
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return None
    lo_s, hi_s = (None, None) if spec is None else spec
    if lo_s is not None and hi_s is not None:
        return None
    vmin, vmax = t.min(), t.max()
    delta = vmax - vmin
    flat = delta == 0  # one location: value +- 0.5, as diffusion_kde2d
    lo = torch.where(flat, vmin - 0.5, vmin - delta * margin) if lo_s is None else t.new_tensor(float(lo_s))
    hi = torch.where(flat, vmax + 0.5, vmax + delta * margin) if hi_s is None else t.new_tensor(float(hi_s))
    return torch.stack([lo, hi]).to(torch.float64)


def _limits_keeping_graph(func: str, axes, specs, margin: float):
    """``specs`` unchanged, or (for torch inputs that require grad) differentiable limit tensors, with the warning."""
    if not any(t.requires_grad for t in axes):
        return specs
    warnings.warn(f"{func} bins the points with a hard histogram: the result has no gradient in the point positions, "
                  "only through the data-derived limits; use kdekit.diffusion_kde2d(..., histogram='soft') to train "
                  "through a KDE", UserWarning, stacklevel=3)
    graphs = [_graph_limits(t, spec, margin) for t, spec in zip(axes, specs)]
    if all(g is None for g in graphs):
        return specs
    return [spec if g is None else g for g, spec in zip(graphs, specs)]


def _check_status(func: str, status: int, strict: bool) -> None:
    if status == KDEStatus.BRENTQ:
        return
    if status == KDEStatus.NON_FINITE_DENSITY:
        warnings.warn(f"{func}: the density overflows (the points spread over less than the dtype can scale)",
                      RuntimeWarning, stacklevel=3)
        return
    if strict:
        raise ValueError(NOT_CONVERGED)
    warnings.warn(f"{func}: bandwidth optimization did not converge on [0, 0.1] (kde_diffusion would raise); "
                  f"returned the {KDEStatus(status).name} result (strict=True raises instead)", RuntimeWarning,
                  stacklevel=3)


def _out(t: torch.Tensor, as_torch: bool):
    return t if as_torch else t.detach().cpu().numpy().astype(np.float64)


def _split_2d(limits):
    if limits is None or (isinstance(limits, numbers.Real) and not isinstance(limits, bool)):
        return [limits, limits]
    if isinstance(limits, (tuple, list)) and len(limits) == 2:
        return list(limits)
    raise ValueError(f"limits must be None, c or ((xmin, xmax), (ymin, ymax)), got {limits!r}")


def kde1d(x, n=1024, limits=None, *, strict: bool = False):
    """``kde_diffusion.kde1d``: returns ``(density (n,), grid (n,) left bin edges, bandwidth)``."""
    xt, as_torch = _as_tensor("x", x)
    (lim,) = _limits_keeping_graph("kde1d", [xt], [limits], 0.1)
    res = diffusion_kde1d(xt, grid_size=_grid(n), limits=lim)
    _check_status("kde1d", int(res.status[0]), strict)
    bandwidth = res.bandwidth[0] if as_torch else float(res.bandwidth[0])
    return _out(res.density[0], as_torch), _out(res.grid[0], as_torch), bandwidth


def kde2d(x, y, n=256, limits=None, *, strict: bool = False):
    """``kde_diffusion.kde2d``: returns ``(density (n, n) [x, y], (xgrid, ygrid), bandwidth (2,))``."""
    xt, as_torch = _as_tensor("x", x)
    yt, _ = _as_tensor("y", y)
    if xt.shape != yt.shape:
        raise ValueError(f"x and y must have the same length, got {xt.shape[0]} and {yt.shape[0]}")
    yt = yt.to(xt)
    lims = _limits_keeping_graph("kde2d", [xt, yt], _split_2d(limits), 0.25)
    res = diffusion_kde2d(xt, yt, grid_size=_grid(n), limits=tuple(lims))
    _check_status("kde2d", int(res.status[0]), strict)
    grid = (_out(res.xgrid[0], as_torch), _out(res.ygrid[0], as_torch))
    return _out(res.density[0], as_torch), grid, _out(res.bandwidth[0], as_torch)
