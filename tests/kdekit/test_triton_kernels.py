"""Triton soft-histogram kernels (run by the interpreter on CPU, TRITON_INTERPRET=1 from conftest): values and
gradients against the float64 torch reference, opcheck of the wrapping op, bitwise-repeatable results."""
import os

import pytest
import torch

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)

from kdekit._backend import use_backend  # noqa: E402
from kdekit.ops.soft_histogram import soft_histogram2d  # noqa: E402
from kdekit.ops.triton_soft_histogram import MAX_BINS, soft_histogram2d_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B=2, N=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    y = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    w = torch.rand(B, N, generator=g, dtype=torch.float64) + 0.5
    r = torch.tensor([[-1.0, 0.9], [-0.8, 1.0]], dtype=torch.float64)[:B].contiguous()
    return x, y, w, r


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_forward_and_gradients_match_float64_reference(dtype):
    x, y, w, r = _inputs()
    bins = 12  # not a power of two: masked bin lanes
    args = [t.to(device=DEVICE, dtype=dtype).requires_grad_() for t in (x, y, w)]
    out = soft_histogram2d_triton(*args, r.to(DEVICE), r.to(DEVICE), bins, 8.0)
    refs = [t.clone().requires_grad_() for t in (x, y, w)]
    with use_backend("torch"):
        ref = soft_histogram2d(refs[0], refs[1], bins, torch.stack([r, r], 1), 8.0, weights=refs[2])
    assert out.dtype == torch.float32
    atol = 1e-4 if dtype == torch.float32 else 1e-2  # float16 inputs are rounded before the float32 kernel
    torch.testing.assert_close(out.double().cpu(), ref, atol=atol, rtol=1e-3)
    cot = torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).reshape(ref.shape)
    got = torch.autograd.grad((out * cot.to(out)).sum(), args)
    want = torch.autograd.grad((ref * cot).sum(), refs)
    for g, gr in zip(got, want):
        torch.testing.assert_close(g.double().cpu(), gr, atol=atol * 50, rtol=1e-2)


def test_opcheck_and_repeatability():
    x, y, w, r = (t.to(DEVICE) for t in _inputs(N=16))
    args = (x.float().requires_grad_(), y.float().requires_grad_(), w.float().requires_grad_(), r, r, 16, 8.0)
    torch.library.opcheck(soft_histogram2d_triton, args)
    first, second = soft_histogram2d_triton(*args), soft_histogram2d_triton(*args)
    assert torch.equal(first, second)  # no atomics: bitwise repeatable


def test_too_many_bins_is_a_clear_error():
    x, y, w, r = (t.float().to(DEVICE) if t.shape[-1] != 2 else t.to(DEVICE) for t in _inputs())
    with pytest.raises(ValueError, match=f"bins <= {MAX_BINS}"):
        soft_histogram2d_triton(x, y, w, r, r, MAX_BINS + 1, 8.0)
