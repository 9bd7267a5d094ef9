"""Uniform draws: ``torch.rand``'s values, vectorised on CPU generators (``kdekit::uniform_``, csrc/cpu/uniform.cpp).

The kernel continues the CPU generator's own Mersenne Twister stream with the block regeneration and the tempering
in vector registers (~10x faster than ``torch.rand``, which draws one word at a time) and leaves the generator in the
state ``torch.rand`` would: the values are bitwise those of ``torch.rand(size, generator=generator)``, so code that
draws through :func:`rand` and code that calls ``torch.rand`` see one stream. :func:`kernel_matches_torch` checks this
once per process against the running torch (a torch that draws differently gets ``torch.rand`` itself).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch

_KERNEL_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=None)
def kernel_matches_torch() -> bool:
    """Whether ``kdekit::uniform_`` reproduces ``torch.rand`` (values and generator state, float32 and float64, over
    more than one 624-word state block) with the torch of this process."""
    for dtype in _KERNEL_DTYPES:
        ref, gen = (torch.Generator().manual_seed(20261206) for _ in range(2))
        expected = torch.rand(1000, generator=ref, dtype=dtype)
        got = torch.empty(1000, dtype=dtype)
        torch.ops.kdekit.uniform_(got, gen)
        if not (torch.equal(got, expected) and torch.equal(gen.get_state(), ref.get_state())):
            return False
    return True


def rand(size: Sequence[int], generator: Optional[torch.Generator], device: torch.device, kernel: bool,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.rand(size, generator=generator, dtype=dtype, device=device)``, bitwise; through the kernel where
    ``kernel`` (the caller's ``cpp`` backend, :func:`~kdekit._backend.select`) and ``dtype`` is float32 or float64."""
    if kernel and dtype in _KERNEL_DTYPES and kernel_matches_torch():
        out = torch.empty(tuple(size), dtype=dtype)
        torch.ops.kdekit.uniform_(out, generator)
        return out
    return torch.rand(tuple(size), generator=generator, dtype=dtype, device=device)
