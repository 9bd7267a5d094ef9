"""Backend selection for kdekit ops: ``torch`` (reference, always), ``cpp`` (CPU kernels of ``kdekit._C``),
``cuda`` (CUDA kernels of ``kdekit._C``, built only against a CUDA torch) and ``triton`` (Triton kernels for CUDA
tensors, or any tensors under ``TRITON_INTERPRET=1``).

Default per call (:func:`select`): CUDA tensors -> ``triton`` for float16/bfloat16/float32 (float32 accumulation),
``cuda`` for float64 (Triton's ``tl.dot`` has no float64), else ``torch``; CPU tensors -> ``cpp`` when loaded, else
``torch``. ``KDEKIT_BACKEND=torch|cpp|cuda|triton`` or ``with kdekit.use_backend(name):`` forces one backend for the
ops that implement it (an op without that backend, or float64 under ``triton``, runs its torch path); forcing a
backend that is unavailable, or cannot run on the tensors' device, raises ``RuntimeError`` naming the reason.

All kernels are deterministic (no atomics; one thread/program owns each output element), so
``torch.use_deterministic_algorithms(True)`` needs no special handling.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch

from . import _ext

BACKENDS = ("torch", "cpp", "cuda", "triton")

_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("kdekit_backend", default=None)


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_probed: Dict[tuple, Tuple[bool, str]] = {}  # (backend, what it depends on) -> (available, reason)


def _probe_triton(interpret: bool) -> Tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton not importable: {exc}"
    if interpret:
        return True, "interpreter (TRITON_INTERPRET=1): runs on CPU tensors, slowly"
    if torch.cuda.is_available():
        return True, f"triton {triton.__version__} on {torch.cuda.get_device_name()}"
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run the kernels in the interpreter)"


def _probe_cuda(loaded: bool) -> Tuple[bool, str]:
    if not loaded:
        return False, _ext.LOAD_ERROR or "not built"
    if not _ext.has_kernel("soft_histogram2d", "CUDA"):
        return False, "kdekit._C was built without CUDA kernels (needs a CUDA torch + toolkit, or KDEKIT_FORCE_CUDA=1)"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, "kdekit._C CUDA kernels loaded"


def _status(name: str) -> Tuple[bool, str]:
    """``(available, reason)`` of one backend. The probes (imports, dispatch tables, CUDA) run once per state of
    what they depend on (``TRITON_INTERPRET``, whether ``kdekit._C`` loaded), so :func:`select` stays cheap."""
    if name == "torch":
        return True, "reference torch ops"
    if name == "cpp":
        return (True, "kdekit._C CPU kernels loaded") if _ext.LOADED else (False, _ext.LOAD_ERROR or "not built")
    key = (name, os.environ.get("TRITON_INTERPRET", "0") == "1") if name == "triton" else (name, _ext.LOADED)
    if key not in _probed:
        _probed[key] = (_probe_triton if name == "triton" else _probe_cuda)(key[1])
    return _probed[key]


def backends() -> Dict[str, Tuple[bool, str]]:
    """``{name: (available, reason)}`` for ``torch``, ``cpp``, ``cuda`` and ``triton``."""
    return {name: _status(name) for name in BACKENDS}


def forced_backend() -> Optional[str]:
    """The backend forced by :func:`use_backend` (innermost) or ``KDEKIT_BACKEND``; None = automatic."""
    name = _forced.get()
    if name is None:
        env = os.environ.get("KDEKIT_BACKEND", "").strip()
        name = _check_name(env) if env else None
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force ``name`` for kdekit ops inside the ``with`` block (thread- and task-local)."""
    token = _forced.set(_check_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def select(tensor: torch.Tensor, implemented: Sequence[str]) -> str:
    """Backend for an op that implements ``implemented`` (always including ``torch``), for inputs like ``tensor``."""
    forced = forced_backend()
    on_cuda = tensor.device.type == "cuda"
    if forced is not None:
        if forced not in implemented or forced == "triton" and tensor.dtype == torch.float64:
            return "torch"  # Triton kernels accumulate in float32: float64 never goes to them
        ok, why = _status(forced)
        if not ok:
            raise RuntimeError(f"backend {forced!r} was forced but is unavailable: {why}")
        if forced == "cpp" and on_cuda or forced == "cuda" and not on_cuda:
            raise RuntimeError(f"backend {forced!r} cannot run on {tensor.device} tensors")
        if forced == "triton" and not on_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError("backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1")
        return forced
    if on_cuda:
        order = ("cuda",) if tensor.dtype == torch.float64 else ("triton", "cuda")
    elif tensor.device.type == "cpu":
        order = ("cpp",)
    else:
        order = ()
    for name in order:
        if name in implemented and _status(name)[0]:
            return name
    return "torch"
