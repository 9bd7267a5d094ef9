"""Parametrisation, device placement and comparison helpers shared by the per-op tests (``test_<op>.py``).

**Backends on the CPU.** Each op's file runs its checks under the backends that take CPU tensors: ``torch`` (the
reference path), ``cpp`` (the CPU kernels of ``kdekit._C``) and ``triton`` (the Triton kernels in the interpreter:
``TRITON_INTERPRET=1``, set by ``tests/conftest.py``), as (backend, dtype) parameters from :func:`backend_dtypes`.
float64 never goes to Triton (kdekit runs its torch path there), and a backend that is unavailable here is a skip
that names the reason.

**On the device.** The ``gpu``-marked tests of each file run on :data:`DEVICE` (``$KDEKIT_TEST_DEVICE``, default
``cuda``; skipped without a CUDA device), from ``bench/gpu_check.sh`` (``pytest -m gpu tests/kdekit``): the CUDA
kernels called directly against the CPU kernels in float64 (:func:`kernel_test`), and every public op under each
backend that runs there (``cuda``, compiled ``triton``, ``torch`` and kdekit's automatic choice) against the CPU torch
path (:func:`device_test`). ``KDEKIT_TEST_DEVICE=cpu`` is a dry run of the same tests without a GPU: the CPU kernels
(``cpp``) and the interpreted Triton kernels stand in for the device's. Fresh buffers are NaN-filled in all of them.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

import kdekit
from kdekit import _ext

CPU_BACKENDS = ("torch", "cpp", "triton")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

DEVICE = os.environ.get("KDEKIT_TEST_DEVICE", "cuda")
ON_GPU = DEVICE == "cuda"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def available(name: str):
    """``(available, reason)`` of a backend on this machine (:func:`kdekit.backends`)."""
    return kdekit.backends()[name]


def _skip_unless_available(name: str):
    ok, why = available(name)
    return [] if ok else [pytest.mark.skip(reason=f"backend {name!r} unavailable: {why}")]


def backends(names=CPU_BACKENDS):
    """``backend`` parameters: one per name, skipped (with the reason) where the backend is unavailable."""
    return [pytest.param(name, id=name, marks=_skip_unless_available(name)) for name in names]


def backend_dtypes(names=CPU_BACKENDS, dtypes=(torch.float64, torch.float32)):
    """``backend, dtype`` parameters for every pair that exists: float64 never goes to Triton; a backend unavailable
    here is a skip naming the reason."""
    return [pytest.param(name, dtype, id=f"{name}-{DTYPE_NAMES[dtype]}", marks=_skip_unless_available(name))
            for name in names for dtype in dtypes if not (name == "triton" and dtype == torch.float64)]


def dtypes(values=DTYPES):
    """``dtype`` parameters with readable ids."""
    return [pytest.param(d, id=DTYPE_NAMES[d]) for d in values]


def use(name: str):
    """``kdekit.use_backend(name)``, or nothing for ``"auto"`` (kdekit's own choice)."""
    return contextlib.nullcontext() if name == "auto" else kdekit.use_backend(name)


TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton_kernel_test(test):
    """A test of a Triton kernel called directly on TRITON_DEVICE: the CUDA device where there is one (marked ``gpu``:
    the compiled kernels), else CPU tensors in the interpreter; skipped where the triton backend is unavailable."""
    ok, why = available("triton")
    test = pytest.mark.skipif(not ok, reason=f"backend 'triton' unavailable: {why}")(test)
    return pytest.mark.gpu(test) if TRITON_DEVICE == "cuda" else test


# ---- on the device ---------------------------------------------------------------------------------------------------

HAS_DEVICE = torch.cuda.is_available() if ON_GPU else True
CUDA_KERNELS = ON_GPU and torch.cuda.is_available() and _ext.has_kernel("ccc", "CUDA")


def device_backends():
    """Backends that run on DEVICE, plus ``"auto"``: ``torch``, ``cuda``, compiled ``triton`` on a GPU (interpreted
    Triton is covered by the CPU tests, so ``TRITON_INTERPRET=1`` leaves it out there); ``torch``, ``cpp`` and
    interpreted ``triton`` in the dry run."""
    runs_here = ("torch", "cuda", "triton") if ON_GPU else ("torch", "cpp", "triton")
    names = [b for b in runs_here if available(b)[0] and not (b == "triton" and ON_GPU and INTERPRETED)]
    return names + ["auto"]


def device_test(test):
    """A test of the public ops on DEVICE: marked ``gpu``, skipped without a CUDA device, fresh buffers NaN-filled."""
    test = pytest.mark.skipif(not HAS_DEVICE, reason="needs a CUDA device (KDEKIT_TEST_DEVICE=cpu: a CPU dry run)")(
        test)
    return pytest.mark.gpu(pytest.mark.usefixtures("nan_filled_buffers")(test))


def kernel_test(test):
    """A test of the CUDA kernels (``torch.ops.kdekit.*`` on DEVICE): marked ``gpu``, skipped without a device and a
    CUDA build of ``kdekit._C`` (in the dry run: without ``kdekit._C``), fresh buffers NaN-filled."""
    ok = CUDA_KERNELS if ON_GPU else _ext.LOADED
    why = ("needs a CUDA device and kdekit._C built with its CUDA kernels" if ON_GPU
           else f"kdekit._C not built: {_ext.LOAD_ERROR}")
    test = pytest.mark.skipif(not ok, reason=why)(test)
    return pytest.mark.gpu(pytest.mark.usefixtures("nan_filled_buffers")(test))


def kernel_dtypes(values=DTYPES):
    """``dtype`` parameters of a CUDA-kernel test; in the CPU dry run float16/bfloat16 are skipped (the CPU kernels
    take float32/float64: kdekit widens half inputs before calling them)."""
    dry = pytest.mark.skip(reason="dry run: the CPU kernels take float32/float64 only")
    return [pytest.param(d, id=DTYPE_NAMES[d], marks=[] if ON_GPU or d in (torch.float32, torch.float64) else [dry])
            for d in values]


requires_cuda = pytest.mark.skipif(not (ON_GPU and torch.cuda.is_available()),
                                   reason="needs a CUDA device (streams, device placement): no dry run")


def kernel_close(actual, expected, dtype, tol):
    """``actual`` (any device/dtype) ~ float64 ``expected`` relative to expected's largest magnitude, per-dtype
    tolerance ``tol[dtype]``."""
    scale = expected.abs().max().clamp(min=1e-300)
    torch.testing.assert_close(actual.cpu().double() / scale, expected / scale, **tol[dtype], equal_nan=True)


def kernel_grads(fn, inputs, seed=7):
    """Output and gradients (of a fixed random weighting of the output) of ``fn`` at ``inputs`` (made leaves)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    weight = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    (out.double() * weight.to(out.device)).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def device_close(actual, expected, tol, what=""):
    """``actual`` (on DEVICE, any dtype) ~ float64 ``expected`` relative to expected's largest magnitude."""
    assert actual.device.type == torch.device(DEVICE).type, what
    scale = expected.abs().max().clamp(min=1e-300)
    torch.testing.assert_close(actual.detach().cpu().double() / scale, expected.detach().double() / scale,
                               equal_nan=True, msg=lambda m: f"{what}: {m}", **tol)


def _value_and_grads(fn, inputs, on_device, backend="torch", seed=7):
    """fn's output and the gradients of a fixed random weighting of it, inputs copied to DEVICE (or the CPU) as
    leaves. ``inputs``: tensors, or None for an argument passed as None."""
    leaves = [None if t is None else t.detach().clone().to(DEVICE if on_device else "cpu").requires_grad_(
        t.is_floating_point()) for t in inputs]
    with use(backend if on_device else "torch"):
        out = fn(*leaves)
    weight = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.device)
    (out.double() * weight).sum().backward()
    return out, [None if t is None or not t.is_floating_point() else t.grad for t in leaves]


def compare_on_device(fn, inputs, dtype, backend, tol, reference_dtype=torch.float64, grad_tol=None):
    """fn on DEVICE under ``backend`` at ``dtype`` against fn on the CPU torch path at ``reference_dtype`` (same
    rounded inputs): output dtype, values and every gradient."""
    rounded = [None if t is None else t.to(dtype) if t.is_floating_point() else t for t in inputs]
    out, grads = _value_and_grads(fn, rounded, True, backend)
    ref_in = [None if t is None else t.to(reference_dtype) if t.is_floating_point() else t for t in rounded]
    ref, ref_grads = _value_and_grads(fn, ref_in, False)
    assert out.dtype == dtype
    device_close(out, ref, tol, "value")
    for i, (g, rg) in enumerate(zip(grads, ref_grads)):
        if rg is not None:
            assert g is not None and g.dtype == dtype, f"gradient {i}"
            device_close(g, rg, grad_tol or tol, f"gradient {i}")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clustered_points(B, N, seed, spread=0.4, weights=False):
    """``(x, y)`` float64 ``(B, N)``: a random centre per item plus ``spread`` * normal noise, clamped to [-1, 1];
    with ``weights``, also ``U(0, 1)`` per-point weights drawn after them."""
    g = generator(seed)
    centre = torch.rand(B, 1, 2, generator=g, dtype=torch.float64) - 0.5
    pts = (centre + spread * torch.randn(B, N, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    x, y = pts[..., 0].contiguous(), pts[..., 1].contiguous()
    return (x, y, torch.rand(B, N, generator=g, dtype=torch.float64)) if weights else (x, y)


def unit_ranges(B, device="cpu", lo=-1.0, hi=1.0):
    """``(B, 2)`` float64 per-item ``[lo, hi]`` ranges, the kernels' range argument."""
    return torch.tensor([[lo, hi]], dtype=torch.float64, device=device).expand(B, 2).contiguous()
