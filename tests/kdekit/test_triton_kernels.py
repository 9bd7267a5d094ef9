"""Triton histogram ops (run by the interpreter on CPU, TRITON_INTERPRET=1 from conftest) called directly: values and
gradients against float64 references, every output element written (fresh buffers are NaN-filled), opcheck,
bitwise-repeatable results, clear errors."""
import os

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)

from kdekit._backend import use_backend  # noqa: E402
from kdekit.ops._binning import bin_edges  # noqa: E402
from kdekit.ops.hard_histogram import hard_histogram2d_triton  # noqa: E402
from kdekit.ops.soft_histogram import TRITON_MAX_BINS, soft_histogram2d, soft_histogram2d_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEVICE == "cuda" else []  # on a GPU machine: the kernels compiled for the device


@pytest.fixture
def nan_empty(monkeypatch):
    """torch.empty / torch.empty_like return NaN-filled floating tensors: an output element a kernel skips shows."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


def _inputs(B=2, N=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    y = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    w = torch.rand(B, N, generator=g, dtype=torch.float64) + 0.5
    r = torch.tensor([[-1.0, 0.9], [-0.8, 1.0]], dtype=torch.float64)[:B].contiguous()
    return x, y, w, r


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_soft_forward_and_gradients_match_float64_reference(dtype, nan_empty):
    x, y, w, r = _inputs()
    bins = 12  # not a power of two: masked bin lanes
    args = [t.to(device=DEVICE, dtype=dtype).requires_grad_() for t in (x, y, w)]
    out = soft_histogram2d_triton(*args, r.to(DEVICE), r.to(DEVICE), bins=bins, sharpness=8.0)
    refs = [t.to(dtype).double().requires_grad_() for t in (x, y, w)]  # the same (rounded) inputs, in float64
    with use_backend("torch"):
        ref = soft_histogram2d(refs[0], refs[1], bins, torch.stack([r, r], 1), 8.0, weights=refs[2])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-5, rtol=1e-4)  # float32 accumulation
    cot = torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).reshape(ref.shape)
    got = torch.autograd.grad((out * cot.to(out)).sum(), args)
    want = torch.autograd.grad((ref * cot).sum(), refs)
    for g, gr in zip(got, want):
        assert g.dtype == dtype
        atol = 1e-4 if dtype == torch.float32 else 2e-2  # the gradient itself is rounded to float16
        torch.testing.assert_close(g.double().cpu(), gr, atol=atol * gr.abs().max().item(), rtol=0)


@pytest.mark.parametrize("bins", [5, 16, 70])  # 70: several (16..64)-wide bin blocks per item
def test_hard_matches_numpy_histogram2d_and_weight_gradient(bins, nan_empty):
    g = np.random.default_rng(bins)
    x, y = g.uniform(-1.1, 1.1, (2, 45)).astype(np.float32), g.uniform(-0.9, 1.1, (2, 45)).astype(np.float32)
    x[0, :bins + 1] = np.linspace(-1, 1, bins + 1)[: 45]  # every edge, the last one closed
    x[1, :4] = [np.nan, np.inf, -np.inf, 1.0]
    w = g.uniform(0.1, 2.0, (2, 45)).astype(np.float32)
    ranges = torch.tensor([[-1.0, 1.0], [-0.8, 1.0]], dtype=torch.float64)
    ex, ey = bin_edges(ranges[:1].expand(2, 2), bins), bin_edges(ranges[1:].expand(2, 2), bins)
    wt = torch.from_numpy(w).to(DEVICE).requires_grad_()
    out = hard_histogram2d_triton(torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE), wt,
                                  ex.to(DEVICE), ey.to(DEVICE))
    ref = np.stack([np.histogram2d(x[b], y[b], bins, range=((-1, 1), (-0.8, 1)), weights=w[b])[0] for b in range(2)])
    assert out.dtype == torch.float32 and out.shape == (2, bins, bins)
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref, rtol=1e-6, atol=1e-6)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (gw,) = torch.autograd.grad((out * cot.to(DEVICE)).sum(), wt)
    for b in range(2):  # dL/dw_n = cot[b, bin_x(n), bin_y(n)] (float64 edges, last bin closed), 0 for dropped points
        xb, yb = x[b].astype(np.float64), y[b].astype(np.float64)
        ix = np.clip(np.searchsorted(np.linspace(-1, 1, bins + 1), xb, side="right") - 1, 0, bins - 1)
        iy = np.clip(np.searchsorted(np.linspace(-0.8, 1, bins + 1), yb, side="right") - 1, 0, bins - 1)
        kept = (xb >= -1) & (xb <= 1) & (yb >= -0.8) & (yb <= 1)
        np.testing.assert_array_equal(gw[b].cpu().numpy(), np.where(kept, cot[b].numpy()[ix, iy], 0))


def test_opcheck_and_repeatability():
    x, y, w, r = (t.to(DEVICE) for t in _inputs(N=16))
    args = (x.float().requires_grad_(), y.float().requires_grad_(), w.float().requires_grad_(), r, r)
    options = dict(bins=16, sharpness=8.0)
    torch.library.opcheck(soft_histogram2d_triton, args, options)
    assert torch.equal(soft_histogram2d_triton(*args, **options), soft_histogram2d_triton(*args, **options))
    e = bin_edges(r, 8)
    hard_args = (x.float(), y.float(), w.float().requires_grad_(), e, e)
    torch.library.opcheck(hard_histogram2d_triton, hard_args)
    assert torch.equal(hard_histogram2d_triton(*hard_args), hard_histogram2d_triton(*hard_args))


def test_too_many_bins_is_a_clear_error():
    x, y, w, r = (t.float().to(DEVICE) if t.shape[-1] != 2 else t.to(DEVICE) for t in _inputs())
    with pytest.raises(ValueError, match=f"bins <= {TRITON_MAX_BINS}"):
        soft_histogram2d_triton(x, y, w, r, r, bins=TRITON_MAX_BINS + 1, sharpness=8.0)
