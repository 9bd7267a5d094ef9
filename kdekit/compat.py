"""Drop-in replacements for ``kde_diffusion.kde1d`` / ``kde_diffusion.kde2d`` that never raise on hard data.

Same signatures and return values: ``kde1d(x, n=1024, limits=None) -> (density, grid, bandwidth)`` and
``kde2d(x, y, n=256, limits=None) -> (density, (xgrid, ygrid), bandwidth)``, with kde_diffusion's limit forms
(``None``, ``c`` for ``(-c, c)``, ``(lo, hi)`` with ``None`` entries; per axis in 2-D). Where kde_diffusion
converges the results are equal (float64, to ~1e-15); where it raises ``ValueError('Bandwidth optimization did not
converge.')`` these return the fallback result of :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d` and emit one
``RuntimeWarning`` naming the :class:`~kdekit.ops.diffusion_kde.KDEStatus`. Lists/numpy arrays in -> numpy float64
out; torch tensors in -> torch tensors out (float16/bfloat16/float32/float64 kept).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .ops.diffusion_kde import KDEStatus, diffusion_kde1d, diffusion_kde2d

__all__ = ["kde1d", "kde2d"]


def _as_tensor(name: str, v) -> tuple:
    """(1-D tensor, was_torch)."""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        arr = np.asarray(v)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.float64))
    if t.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    return t, isinstance(v, torch.Tensor)


def _warn(func: str, status: int) -> None:
    if status != KDEStatus.BRENTQ:
        warnings.warn(
            f"{func}: bandwidth optimization did not converge on [0, 0.1] (kde_diffusion would raise); "
            f"returned the {KDEStatus(status).name} result",
            RuntimeWarning,
            stacklevel=3,
        )


def _out(t: torch.Tensor, as_torch: bool):
    return t if as_torch else t.detach().cpu().numpy().astype(np.float64)


def kde1d(x, n: int = 1024, limits=None):
    """``kde_diffusion.kde1d``: returns ``(density (n,), grid (n,) left bin edges, bandwidth)``."""
    xt, as_torch = _as_tensor("x", x)
    res = diffusion_kde1d(xt, grid_size=int(n), limits=limits)
    _warn("kde1d", int(res.status[0]))
    bandwidth = res.bandwidth[0] if as_torch else float(res.bandwidth[0])
    return _out(res.density[0], as_torch), _out(res.grid[0], as_torch), bandwidth


def kde2d(x, y, n: int = 256, limits=None):
    """``kde_diffusion.kde2d``: returns ``(density (n, n) [x, y], (xgrid, ygrid), bandwidth (2,))``."""
    xt, as_torch = _as_tensor("x", x)
    yt, _ = _as_tensor("y", y)
    if xt.shape != yt.shape:
        raise ValueError(f"x and y must have the same length, got {xt.shape[0]} and {yt.shape[0]}")
    yt = yt.to(xt)
    res = diffusion_kde2d(xt, yt, grid_size=int(n), limits=limits)
    _warn("kde2d", int(res.status[0]))
    grid = (_out(res.xgrid[0], as_torch), _out(res.ygrid[0], as_torch))
    return _out(res.density[0], as_torch), grid, _out(res.bandwidth[0], as_torch)
