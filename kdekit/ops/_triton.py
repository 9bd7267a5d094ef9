"""Triton, loaded on the first kernel launch (``import kdekit`` does not import triton: ~0.2 s).

Op modules write ``from ._triton import tl, triton, triton_jit`` and decorate their kernels with :func:`triton_jit`.
Until a kernel of a module is first launched (``kernel[grid](...)``), ``triton``/``tl`` are stand-ins that import the
real modules on attribute access and the kernels are plain functions; the first launch imports triton, jits every
kernel of that module and puts the real ``triton``, ``triton.language`` and kernels into the module's globals, which
is where Triton's compiler resolves the names a kernel uses. ``TRITON_INTERPRET=1`` must be set before that first
launch (not before ``import kdekit``) to run the kernels on CPU tensors. Without triton installed,
:func:`kdekit._backend.select` never picks the ``triton`` backend, so no kernel is launched.
"""
from __future__ import annotations

import importlib


class _LazyModule:
    """Stands for ``triton`` or ``triton.language`` until a kernel launch puts the module itself in its place."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


triton = _LazyModule("triton")
tl = _LazyModule("triton.language")


class LazyKernel:
    """A Triton kernel (or ``@triton.jit`` helper) jitted at its module's first launch; ``kernel[grid](...)``."""

    def __init__(self, fn):
        self.fn = fn
        self.jitted = None

    def __getitem__(self, grid):
        return _resolve_module(self.fn.__globals__)[self.fn.__name__][grid]


def _resolve_module(namespace: dict) -> dict:
    """Real triton, triton.language and jitted kernels in an op module's globals (once); returns the globals."""
    real_triton = importlib.import_module("triton")
    for name, value in list(namespace.items()):
        if isinstance(value, LazyKernel):
            if value.jitted is None:
                value.jitted = real_triton.jit(value.fn)
            namespace[name] = value.jitted
        elif value is triton:
            namespace[name] = real_triton
        elif value is tl:
            namespace[name] = importlib.import_module("triton.language")
    return namespace


def triton_jit(fn) -> LazyKernel:
    """``triton.jit(fn)`` at the first launch of a kernel of ``fn``'s module (see the module docstring)."""
    return LazyKernel(fn)
