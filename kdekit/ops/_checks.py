"""Argument checks and dtype helpers shared by every kdekit op: a bad argument raises a ``ValueError``/``TypeError``
naming the argument and what was wrong. One mask contract (bool, True = valid) and one range parser for all ops."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

Range = Union[Tuple[float, float], torch.Tensor]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float16/bfloat16 compute in float32, float32/float64 in themselves."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def finite_items(t: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where every element of item ``t[b]`` is finite: one min/max reduction (NaN propagates), not the
    five elementwise passes of ``isfinite(t).all()``, which on a large density cost more than the kernel on a busy
    CPU."""
    lo, hi = torch.aminmax(t.detach().flatten(1), dim=1)
    return is_finite(lo) & is_finite(hi)


def is_finite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite`` of a floating tensor in two elementwise passes (``|t| < inf``; NaN compares False) instead of
    its four."""
    return t.abs() < math.inf


def check_float_tensor(name: str, t, ndim: Optional[int] = None, min_ndim: Optional[int] = None) -> torch.Tensor:
    """Raise if ``t`` is not a floating-point tensor with the expected number of dims."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {tuple(t.shape)}")
    return t


def check_points(name: str, x: torch.Tensor) -> torch.Tensor:
    """Points are ``(B, N)``; a 1-D tensor is accepted as one item ``(1, N)`` by the caller."""
    check_float_tensor(name, x, ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); need B >= 1")
    return x


def check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, shape: bool = True) -> None:
    """Raise if two tensors differ in device or dtype (and shape when ``shape``)."""
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; move them to one device")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b} has dtype {b.dtype} but {name_a} has dtype {a.dtype}")
    if shape and a.shape != b.shape:
        raise ValueError(f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}")


def check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int):
        raise TypeError(f"bins must be an int, got {type(bins).__name__}")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    return bins


def _check_companion(arg: str, t, name: str, x: torch.Tensor, bool_only: bool) -> torch.Tensor:
    """Raise unless ``t`` (argument ``arg``) is a tensor with the shape and device of ``x`` (``name``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
    if bool_only and t.dtype != torch.bool:
        raise TypeError(f"{arg} must be a bool tensor (True = valid), got {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"{arg} has shape {tuple(t.shape)} but {name} has shape {tuple(x.shape)}")
    if t.device != x.device:
        raise ValueError(f"{arg} is on {t.device} but {name} is on {x.device}")
    return t


def check_mask(mask, name: str, x: torch.Tensor) -> Optional[torch.Tensor]:
    """Raise unless ``mask`` is None or a bool tensor (True = valid) with the shape and device of ``x`` (``name``)."""
    return None if mask is None else _check_companion("mask", mask, name, x, bool_only=True)


def resolve_mask(
    x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None
) -> Optional[torch.Tensor]:
    """Validity mask ``(B, N)`` (bool) from an explicit ``mask`` or per-row ``lengths``; None = all valid.

    ``lengths[b] = L`` marks the first ``L`` points of row ``b`` as valid (right padding).
    """
    B, N = x.shape[0], x.shape[-1]
    if mask is not None and lengths is not None:
        raise ValueError("pass either mask or lengths, not both")
    if mask is not None:
        return check_mask(mask, "the points", x)
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
        if (lengths < 0).any() or (lengths > N).any():
            raise ValueError(f"lengths must lie in [0, {N}], got min {int(lengths.min())} max {int(lengths.max())}")
        lengths = lengths.to(x.device)
        return torch.arange(N, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    return None


def check_weights(weights: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """None, or ``weights`` (the shape and device of the points ``x``) in ``x``'s dtype."""
    if weights is None:
        return None
    return _check_companion("weights", weights, "the points", x, bool_only=False).to(x.dtype)


def resolve_range(name: str, rng, batch: int, device, dtype) -> torch.Tensor:
    """A range ``(lo, hi)`` or a per-item tensor ``(B, 2)`` as a ``(B, 2)`` tensor; raises if ``lo >= hi``."""
    if isinstance(rng, torch.Tensor):
        r = rng.to(device=device, dtype=dtype)
        if r.shape == (2,):
            r = r.expand(batch, 2)
        if r.shape != (batch, 2):
            raise ValueError(f"{name} must be (lo, hi) or a ({batch}, 2) tensor, got shape {tuple(r.shape)}")
    else:
        if not isinstance(rng, Sequence) or len(rng) != 2:
            raise ValueError(f"{name} must be a pair (lo, hi), got {rng!r}")
        r = torch.tensor([float(rng[0]), float(rng[1])], device=device, dtype=dtype).expand(batch, 2)
    if not torch.isfinite(r).all():
        raise ValueError(f"{name} must be finite, got {r.tolist() if r.numel() <= 8 else 'non-finite values'}")
    if (r[:, 0] >= r[:, 1]).any():
        bad = int(torch.nonzero(r[:, 0] >= r[:, 1])[0, 0])
        raise ValueError(f"{name} needs lo < hi, got lo={r[bad, 0].item()} hi={r[bad, 1].item()} (item {bad})")
    return r


def check_reduction(reduction) -> str:
    """Raise unless ``reduction`` is one of torch's loss reductions."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """``loss`` (per item) reduced as torch losses do: ``"mean"``, ``"sum"`` or ``"none"`` (unchanged)."""
    check_reduction(reduction)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
