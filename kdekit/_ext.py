"""Loads the compiled kernels ``kdekit._C`` (when built) and registers, for every op of ``csrc/kdekit.cpp``, a fake
kernel (shapes/dtypes for FakeTensor, ``torch.compile`` and ``opcheck``) and, for the differentiable ones, the autograd
formula (the op's ``*_backward`` op). The ops are then called as ``torch.ops.kdekit.<name>``.

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
    _register_soft_kde2d_autograd()
    _register_pseudo_observations_autograd()


def _register_soft_kde2d_autograd() -> None:
    """soft_kde2d_pooled: gradients of the blocks and the times to x, y and weights; it saves its own outputs."""

    def setup_context(ctx, inputs, output):
        x, y, weights, range_x, range_y, count, _grid, pool, sharpness, clip, *_solver, implicit = inputs
        _blocks, times, status, spectrum, raised, sums = output
        ctx.save_for_backward(x, y, weights, range_x, range_y, count, spectrum, raised, sums, times, status)
        ctx.params = (pool, sharpness, clip, implicit)
        ctx.mark_non_differentiable(status, spectrum, raised, sums)
        ctx.set_materialize_grads(False)  # no (B, n, n) zeros for the spectrum's missing gradient

    def backward(ctx, grad_blocks, grad_times, _status, _spectrum, _raised, _sums):
        x, y, weights, range_x, range_y, count, spectrum, raised, sums, times, status = ctx.saved_tensors
        pool = ctx.params[0]
        grad_blocks = x.new_zeros((x.shape[0], pool, pool)) if grad_blocks is None else grad_blocks
        grad_times = torch.zeros_like(times) if grad_times is None else grad_times
        gx, gy, gw = torch.ops.kdekit.soft_kde2d_pooled_backward(grad_blocks, grad_times, x, y, weights, range_x,
                                                                 range_y, count, spectrum, raised, sums, times,
                                                                 status, *ctx.params)
        return (gx, gy, gw) + (None,) * 12

    torch.library.register_autograd("kdekit::soft_kde2d_pooled", backward, setup_context=setup_context)


def _register_pseudo_observations_autograd() -> None:
    """pseudo_observations: the gradient of the observations to the ratings, from the pivots it returns (no second
    selection)."""

    def setup_context(ctx, inputs, output):
        ratings, keys, size, noise = inputs
        ctx.save_for_backward(ratings, keys, size, noise, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_obs, _grad_pivots):
        if grad_obs is None:
            return None, None, None, None
        ratings, keys, size, noise, pivots = ctx.saved_tensors
        grad = torch.ops.kdekit.pseudo_observations_backward(grad_obs, ratings, keys, size, noise, pivots)
        return grad, None, None, None

    torch.library.register_autograd("kdekit::pseudo_observations", backward, setup_context=setup_context)


if LOADED:
    _register()
