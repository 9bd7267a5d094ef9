"""Reductions shared by the metrics and the pooling: which dims an op reduces, the fused kernels' ``(rows, n)``
layout, per-item normalisation."""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch

Dims = Union[int, Sequence[int]]


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


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record this call. The fused metric kernels serve evaluation (no grad); losses take the
    torch path, which also supports higher-order gradients."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rows_over(dims: Tuple[int, ...], keepdim: bool, *tensors: torch.Tensor):
    """Tensors of one shape as ``(batch, reduced)`` rows for the fused kernels (the reduced ``dims`` flattened last;
    a view where possible, e.g. a transpose: the kernels take strides), and the shape of a per-row result (reduced
    dims kept with size 1 if ``keepdim``, else dropped)."""
    shape = tensors[0].shape
    order = (*(d for d in range(len(shape)) if d not in dims), *dims)
    if order != tuple(range(len(shape))):
        tensors = tuple(t.permute(order) for t in tensors)
    n = math.prod(shape[d] for d in dims)
    out_shape = [1 if d in dims else s for d, s in enumerate(shape) if keepdim or d not in dims]
    return tuple(t.reshape(-1, n) for t in tensors), out_shape


def finish_reduction(out: torch.Tensor, dims: Tuple[int, ...], keepdim: bool, dtype: torch.dtype) -> torch.Tensor:
    """Drop the size-1 reduced ``dims`` of ``out`` unless ``keepdim``; cast to the output ``dtype``."""
    out = out if keepdim else out.squeeze(dims)
    return out if out.dtype == dtype else out.to(dtype)


def normalize_per_item(t: torch.Tensor, dims) -> torch.Tensor:
    """``t`` divided by its sum over ``dims`` (kept at 0 where that sum is exactly 0)."""
    total = t.sum(dim=dims, keepdim=True)
    return t / torch.where(total != 0, total, 1)
