"""Loads the compiled kernels ``kdekit._C`` (when built) and registers, for every op of ``csrc/kdekit.cpp``, a fake
kernel (shapes/dtypes for FakeTensor, ``torch.compile`` and ``opcheck``) and, for the differentiable ones, the autograd
formula (the op's ``*_backward`` op). The training loss's two ops, ``soft_kde2d_pooled`` and ``pseudo_observations``,
register theirs in C++ beside their kernels (no Python per call on the hot path). The ops are then called as
``torch.ops.kdekit.<name>``.

``LOADED`` tells whether the library is available; ``LOAD_ERROR`` says why not. ``kde2d_solve`` and ``kde2d_points``
have no autograd formula (root solve / label generation): call them on detached inputs.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Optional

import torch

from .ops._registration import register_backward_op

LOAD_ERROR: Optional[str] = None
if importlib.util.find_spec(f"{__package__}._C") is None:  # (a bare import would blame a "circular import")
    LOADED = False
    LOAD_ERROR = ("kdekit._C is not built: pure-Python install (KDEKIT_SKIP_EXT=1, or the compile failed and setup.py "
                  "fell back); reinstall with a C++ compiler: pip install --no-build-isolation kdekit")
else:
    try:
        from . import _C  # noqa: F401  (loading the library registers the ops)

        LOADED = True
    except ImportError as exc:  # e.g. built against another torch
        LOADED = False
        LOAD_ERROR = f"kdekit._C is built but does not load (built against another torch?): {exc}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``kdekit::<op>`` has a kernel for ``dispatch_key`` (``"CPU"``, ``"CUDA"``)."""
    return LOADED and torch._C._dispatch_has_kernel_for_dispatch_key(f"kdekit::{op}", dispatch_key)


def _register() -> None:
    reg = torch.library.register_fake

    @reg("kdekit::soft_histogram2d")
    def _(x, y, weights, range_x, range_y, bins, sharpness):
        return x.new_empty((x.shape[0], bins, bins))

    @reg("kdekit::soft_histogram2d_backward")
    def _(grad, x, y, weights, range_x, range_y, bins, sharpness):
        return torch.empty_like(x), torch.empty_like(y), torch.empty_like(weights)

    @reg("kdekit::hard_histogram2d")
    def _(x, y, weights, range_x, range_y, bins):
        return x.new_empty((x.shape[0], bins, bins))

    @reg("kdekit::hard_histogram2d_backward")
    def _(grad, x, y, range_x, range_y, bins):
        return torch.empty_like(x)

    @reg("kdekit::kde2d_solve")
    def _(spectrum, count, t_max, xtol, rtol, maxiter):
        b = spectrum.shape[0]
        return spectrum.new_empty((b, 3), dtype=torch.float64), spectrum.new_empty((b,), dtype=torch.int32)

    @reg("kdekit::kde2d_points")
    def _(x, y, weights, range_x, range_y, count, grid, pool, clip, t_max, xtol, rtol, maxiter):
        b, side = x.shape[0], grid if pool == 0 else pool
        return (x.new_empty((b, side, side)), x.new_empty((b, 3), dtype=torch.float64),
                x.new_empty((b,), dtype=torch.int32))

    @reg("kdekit::soft_kde2d_pooled")
    def _(x, y, weights, range_x, range_y, count, grid, pool, sharpness, clip, t_max, xtol, rtol, maxiter, implicit):
        b, side = x.shape[0], grid if clip > -math.inf else 0
        return (x.new_empty((b, pool, pool)), x.new_empty((b, 3), dtype=torch.float64),
                x.new_empty((b,), dtype=torch.int32), x.new_empty((b, grid, grid), dtype=torch.float64),
                x.new_empty((b, side, side), dtype=torch.bool), x.new_empty((b, pool, pool), dtype=torch.float64))

    @reg("kdekit::soft_kde2d_pooled_backward")
    def _(grad_blocks, grad_times, x, y, weights, range_x, range_y, count, spectrum, raised, sums, times, status,
          pool, sharpness, clip, implicit):
        return torch.empty_like(x), torch.empty_like(y), torch.empty_like(weights)

    @reg("kdekit::pseudo_observations")
    def _(ratings, keys, size, noise):
        return ratings.new_empty((ratings.shape[0], keys.shape[1], 2)), torch.empty_like(size)

    @reg("kdekit::pseudo_observations_backward")
    def _(grad, ratings, keys, size, noise, pivots):
        return torch.empty_like(ratings)

    @reg("kdekit::uniform_")
    def _(self, generator):
        return None

    @reg("kdekit::ccc")
    def _(x, y, unbiased):
        return x.new_empty((x.shape[0],))

    @reg("kdekit::ccc_backward")
    def _(grad, x, y, unbiased):
        return torch.empty_like(x), torch.empty_like(y)

    @reg("kdekit::divergence")
    def _(p, q, kind):
        return p.new_empty((p.shape[0],))

    @reg("kdekit::divergence_backward")
    def _(grad, p, q, kind):
        return torch.empty_like(p), torch.empty_like(q)

    ops = torch.ops.kdekit
    register_backward_op("kdekit::soft_histogram2d", ops.soft_histogram2d_backward, differentiable=(0, 1, 2))
    register_backward_op("kdekit::hard_histogram2d", ops.hard_histogram2d_backward, differentiable=(2,),
                         saved=(0, 1, 3, 4))
    register_backward_op("kdekit::ccc", ops.ccc_backward, differentiable=(0, 1))
    register_backward_op("kdekit::divergence", ops.divergence_backward, differentiable=(0, 1))


if LOADED:
    _register()
