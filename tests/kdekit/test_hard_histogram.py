"""hard_histogram1d/2d equal numpy.histogram/histogram2d (tests/reference.py) under every backend (torch, cpp,
triton) and dtype, including every edge, NaN/inf, ties, per-item ranges and padding; the weight gradient is the bin
gather of the cotangent; the fused kernels called directly (opcheck, gradcheck, argument errors); properties; and on
the device (gpu): the CUDA kernel against the CPU kernel and numpy, and the public op under each device backend."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdekit.ops._binning import bin_edges
from kdekit.ops.hard_histogram import hard_histogram1d, hard_histogram2d, hard_histogram2d_triton
from tests import reference
from tests.kdekit.helpers import (
    DEVICE,
    TRITON_DEVICE,
    backend_dtypes,
    backends,
    clustered_points,
    compare_on_device,
    device_backends,
    device_test,
    dtypes,
    kernel_close,
    kernel_dtypes,
    kernel_grads,
    kernel_test,
    requires_cuda,
    triton_kernel_test,
    unit_ranges,
    use,
)

NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
R2 = ((-1.0, 1.0), (-1.0, 1.0))
BACKEND_DTYPES = backend_dtypes()  # torch, cpp, triton x float64, float32 (float64 never goes to Triton)
# bins/range pairs: exactly representable edges, and edges float32 cannot represent (1-D and 2-D rules differ there)
CASES = [(64, (-1.0, 1.0)), (10, (-0.8, 0.7)), (7, (0.1, 0.3))]
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # fresh kernel outputs are NaN until written
ops = torch.ops.kdekit


def _data(seed, shape, rng_, bins, np_dtype):
    """Uniform points slightly beyond the range, plus every edge, the last edge, NaN, +-Inf and out-of-range points."""
    g = np.random.default_rng(seed)
    lo, hi = rng_
    pad = 0.1 * (hi - lo)
    x = g.uniform(lo - pad, hi + pad, shape)
    special = np.concatenate([np.linspace(lo, hi, bins + 1), [hi, hi, lo, np.nan, np.inf, -np.inf, lo - 1, hi + 1]])
    x[..., : special.size] = special
    x = x.astype(np_dtype)
    g.shuffle(x, axis=-1)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins,rng_", CASES)
def test_1d_matches_numpy_histogram(dtype, bins, rng_):
    x = _data(1, (4, 120), rng_, bins, NP_DTYPES[dtype])
    out = hard_histogram1d(torch.from_numpy(x), bins, rng_)
    assert out.dtype == dtype and out.shape == (4, bins)
    ref = reference.histogram_items(x, bins, rng_)
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
@pytest.mark.parametrize("bins,rng_", CASES)
def test_2d_matches_numpy_histogram2d(backend, dtype, bins, rng_):
    x = _data(2, (3, 150), rng_, bins, NP_DTYPES[dtype])
    y_rng = (rng_[0] - 0.25, rng_[1])
    y = _data(3, (3, 150), y_rng, bins, NP_DTYPES[dtype])
    with use(backend):
        out = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, (rng_, y_rng))
    assert out.dtype == dtype and out.shape == (3, bins, bins)
    ref = reference.histogram2d_items(x, y, bins, (rng_, y_rng))
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("backend", backends())
def test_float32_edge_rule_differs_between_1d_and_2d_like_numpy(backend):
    # float32(-0.8) < -0.8: numpy.histogram (float32 edges) puts it in bin 1, numpy.histogram2d (float64 edges) in bin 0
    x = torch.tensor([[-0.8]], dtype=torch.float32)
    np.testing.assert_array_equal(hard_histogram1d(x, 10, (-1.0, 1.0))[0].numpy(),
                                  reference.histogram_items(x.numpy(), 10, (-1, 1))[0])
    with use(backend):
        h2 = hard_histogram2d(x, torch.zeros_like(x), 10, ((-1.0, 1.0), (-1.0, 1.0)))[0].sum(-1)
    ref2 = reference.histogram2d_items(x.numpy(), np.zeros((1, 1), np.float32), 10, R2)[0].sum(-1)
    np.testing.assert_array_equal(h2.numpy(), ref2)
    assert hard_histogram1d(x, 10, (-1.0, 1.0))[0, 1] == 1 and h2[0] == 1


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
def test_likert_ties(backend, dtype):
    g = np.random.default_rng(4)
    levels = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    x = levels[g.integers(0, 5, (6, 40))]
    y = levels[g.integers(0, 5, (6, 40))]
    for bins in (4, 5, 64):
        with use(backend):
            out = hard_histogram2d(torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype), bins, R2)
        np.testing.assert_array_equal(out.numpy(), reference.histogram2d_items(x, y, bins, R2))
        np.testing.assert_array_equal(hard_histogram1d(torch.from_numpy(x), bins, (-1, 1)).numpy(),
                                      reference.histogram_items(x, bins, (-1, 1)))


@pytest.mark.parametrize("backend", backends())
def test_per_item_ranges(backend):
    g = np.random.default_rng(5)
    x = g.normal(size=(4, 80))
    y = g.normal(size=(4, 80))
    r = np.stack([np.sort(g.normal(size=2)) * 2 for _ in range(4)])
    ry = np.stack([np.sort(g.normal(size=2)) * 2 for _ in range(4)])
    out1 = hard_histogram1d(torch.from_numpy(x), 9, torch.from_numpy(r))
    ref1 = reference.histogram_items(x, 9, r)
    np.testing.assert_array_equal(out1.numpy(), ref1)
    r2 = torch.from_numpy(np.stack([r, ry], axis=1))  # (B, 2, 2)
    with use(backend):
        out2 = hard_histogram2d(torch.from_numpy(x).float(), torch.from_numpy(y).float(), 9, r2)
    ref2 = reference.histogram2d_items(x.astype(np.float32), y.astype(np.float32), 9, np.stack([r, ry], axis=1))
    np.testing.assert_array_equal(out2.numpy(), ref2)


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
def test_weights_match_numpy_and_weight_gradient_is_the_bin_gather(backend, dtype):
    x = _data(6, (3, 60), (-1.0, 1.0), 8, NP_DTYPES[dtype])
    y = _data(7, (3, 60), (-1.0, 1.0), 8, NP_DTYPES[dtype])
    w = np.random.default_rng(8).uniform(0.1, 2.0, (3, 60)).astype(NP_DTYPES[dtype])
    out1 = hard_histogram1d(torch.from_numpy(x), 8, (-1, 1), weights=torch.from_numpy(w))
    ref1 = reference.histogram_items(x, 8, (-1, 1), weights=w)
    np.testing.assert_allclose(out1.numpy(), ref1, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    wt = torch.from_numpy(w).requires_grad_()
    with use(backend):
        out2 = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), 8, R2, weights=wt)
    ref2 = reference.histogram2d_items(x, y, 8, R2, weights=w)
    np.testing.assert_allclose(out2.detach().numpy(), ref2, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    cot = torch.randn(out2.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    out2.backward(cot)
    for b in range(3):  # dL/dw_n = cot[b, bin_x(n), bin_y(n)], 0 for dropped points
        np.testing.assert_array_equal(wt.grad[b].numpy(),
                                      reference.hard_histogram2d_weight_grad(x[b], y[b], 8, R2, cot[b].numpy()))


@pytest.mark.parametrize("backend,dtype", backend_dtypes(("torch", "cpp"), (torch.float16, torch.float32,
                                                                          torch.float64)))
def test_backends_agree_with_torch_path_and_weight_gradient_is_one_inside(backend, dtype):
    g = torch.Generator().manual_seed(0)
    x = (0.4 * torch.randn(3, 40, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    y = (0.4 * torch.randn(3, 40, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    w = torch.rand(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with use(backend):
        h = hard_histogram2d(x, y, 8, R2, weights=w)
    (g,) = torch.autograd.grad(h.sum(), w)
    with use("torch"):
        ref = hard_histogram2d(x, y, 8, R2, weights=w)
    assert h.dtype == dtype
    torch.testing.assert_close(h, ref, atol=1e-2 if dtype == torch.float16 else 1e-5, rtol=1e-3)
    torch.testing.assert_close(g, torch.ones_like(w).where((x.abs() <= 1) & (y.abs() <= 1), 0))


@pytest.mark.parametrize("backend", backends(("torch", "cpp")))  # float64: never Triton
def test_weight_gradcheck_float64(backend):
    x, y, w = clustered_points(2, 20, seed=15, weights=True)
    x[0, :2] = 1.5  # outside: no gradient
    with use(backend):
        assert torch.autograd.gradcheck(lambda c: hard_histogram2d(x, y, 8, R2, weights=c), [w.requires_grad_()])


@pytest.mark.parametrize("backend", backends())
def test_ragged_mask_and_lengths_equal_dropping_padding(backend):
    g = np.random.default_rng(9)
    lengths = np.array([5, 0, 17, 30])
    x = g.uniform(-1, 1, (4, 30))
    y = g.uniform(-1, 1, (4, 30))
    pad = np.arange(30)[None, :] >= lengths[:, None]
    x[pad] = np.nan  # padding must not matter
    y[pad] = 7.0
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mask = torch.from_numpy(~pad)
    ref1 = np.stack([reference.histogram_items(x[b:b + 1, :n], 6, (-1, 1))[0] for b, n in enumerate(lengths)])
    ref2 = np.stack([reference.histogram2d_items(x[b:b + 1, :n], y[b:b + 1, :n], 6, R2)[0]
                     for b, n in enumerate(lengths)])
    w = torch.ones(4, 30, dtype=torch.float32, requires_grad=True)
    for kw in (dict(mask=mask), dict(lengths=torch.from_numpy(lengths))):
        np.testing.assert_array_equal(hard_histogram1d(xt, 6, (-1, 1), **kw).numpy(), ref1)
        with use(backend):
            h2 = hard_histogram2d(xt.float(), yt.float(), 6, R2, weights=w, **kw)
        np.testing.assert_array_equal(h2.detach().numpy(), ref2)
        (grad,) = torch.autograd.grad(h2.sum(), w)
        assert (grad[torch.from_numpy(pad)] == 0).all()  # padded points: no gradient, whatever their bin


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", dtypes([torch.float16, torch.bfloat16]))
def test_low_precision_counts_like_float32_of_same_values(backend, dtype):
    x = torch.rand(3, 200, generator=torch.Generator().manual_seed(10)) * 2.2 - 1.1
    xl = x.to(dtype)
    out = hard_histogram1d(xl, 16, (-1, 1))
    assert out.dtype == dtype
    # edges of [-1, 1] with 16 bins are exact in every dtype, so binning the same values in float32 must agree
    torch.testing.assert_close(out.float(), hard_histogram1d(xl.float(), 16, (-1, 1)), rtol=0, atol=0)
    with use(backend):
        out2 = hard_histogram2d(xl, xl.flip(-1), 16, R2)
    assert out2.dtype == dtype
    ref2 = reference.histogram2d_items(xl.double().numpy(), xl.flip(-1).double().numpy(), 16, R2)
    np.testing.assert_array_equal(out2.float().numpy(), ref2)  # counts <= 200: exact in float16 and bfloat16


def test_unbatched_input_and_weight_gradient():
    x = torch.tensor([0.1, -0.5, 0.9, 2.0], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    out = hard_histogram1d(x, 2, (-1, 1), weights=w)
    assert out.shape == (2,)
    torch.testing.assert_close(out.detach(), torch.tensor([2.0, 4.0], dtype=torch.float64))
    out.backward(torch.tensor([10.0, 100.0], dtype=torch.float64))
    torch.testing.assert_close(w.grad, torch.tensor([100.0, 10.0, 100.0, 0.0], dtype=torch.float64))


def test_bad_arguments_raise():
    x = torch.rand(2, 5)
    with pytest.raises(ValueError, match="bins"):
        hard_histogram1d(x, 1, (0, 1))
    with pytest.raises(TypeError, match="bins"):
        hard_histogram1d(x, 4.0, (0, 1))
    with pytest.raises(ValueError, match="lo < hi"):
        hard_histogram1d(x, 4, (1, 1))
    with pytest.raises(ValueError, match="lo < hi"):
        hard_histogram2d(x, x, 4, ((0, 1), (2, 1)))
    with pytest.raises(ValueError, match="range"):
        hard_histogram1d(x, 4, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="empty batch"):
        hard_histogram1d(torch.rand(0, 5), 4, (0, 1))
    with pytest.raises(ValueError, match="either mask or lengths"):
        hard_histogram1d(x, 4, (0, 1), mask=torch.ones(2, 5, dtype=torch.bool), lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="y has shape"):
        hard_histogram2d(x, torch.rand(2, 4), 4, ((0, 1), (0, 1)))
    with pytest.raises(TypeError, match="y has dtype"):
        hard_histogram2d(x, x.double(), 4, ((0, 1), (0, 1)))
    with pytest.raises(TypeError, match="floating dtype"):
        hard_histogram1d(torch.ones(2, 5, dtype=torch.int64), 4, (0, 1))
    with pytest.raises(ValueError, match="weights has shape"):
        hard_histogram1d(x, 4, (0, 1), weights=torch.ones(2, 4))
    with pytest.raises(ValueError, match="not strictly increasing"):
        hard_histogram1d(x.half(), 4000, (0, 1))


# ---- property tests -------------------------------------------------------------------------------------------------

finite = st.floats(-1.5, 1.5, allow_nan=False, width=64)
values = st.one_of(finite, st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, float("nan"), float("inf")]))


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    x = np.array(draw(st.lists(values, min_size=b * n, max_size=b * n))).reshape(b, n)
    y = np.array(draw(st.lists(values, min_size=b * n, max_size=b * n))).reshape(b, n)
    lengths = np.array(draw(st.lists(st.integers(0, n), min_size=b, max_size=b)))
    bins = draw(st.integers(2, 9))
    return x, y, lengths, bins



@given(batches(), st.randoms(use_true_random=False))
def test_property_permutation_invariance(data, rnd):
    x, y, _, bins = data
    perm = np.array(rnd.sample(range(x.shape[1]), x.shape[1]))
    a = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, R2)
    b = hard_histogram2d(torch.from_numpy(x[:, perm]), torch.from_numpy(y[:, perm]), bins, R2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@given(batches())
def test_property_mass_conservation(data):
    x, y, _, bins = data
    h1 = hard_histogram1d(torch.from_numpy(x), bins, (-1, 1))
    np.testing.assert_array_equal(h1.sum(-1).numpy(), ((x >= -1) & (x <= 1)).sum(-1))
    h2 = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, R2)
    np.testing.assert_array_equal(h2.sum((-2, -1)).numpy(), ((x >= -1) & (x <= 1) & (y >= -1) & (y <= 1)).sum(-1))


@given(batches())
def test_property_mask_equals_dropping_and_batching_is_transparent(data):
    x, y, lengths, bins = data
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mask = torch.arange(x.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
    batched = hard_histogram2d(xt, yt, bins, R2, mask=mask)
    batched1 = hard_histogram1d(xt, bins, (-1, 1), lengths=torch.from_numpy(lengths))
    for b, n in enumerate(lengths):
        alone = hard_histogram2d(xt[b : b + 1, :n], yt[b : b + 1, :n], bins, R2)[0]
        torch.testing.assert_close(batched[b], alone, rtol=0, atol=0)
        torch.testing.assert_close(batched1[b], hard_histogram1d(xt[b, :n], bins, (-1, 1)), rtol=0, atol=0)


# ---- the cpp kernel (torch.ops.kdekit.hard_histogram2d) called directly ----------------------------------------------

cpp_only = pytest.mark.parametrize("backend", backends(("cpp",)))


@cpp_only
def test_cpp_kernel_matches_numpy_including_edges_and_dropped_points(backend):
    g = np.random.default_rng(2)
    x = g.uniform(-1.2, 1.2, (4, 50))
    y = g.uniform(-1.2, 1.2, (4, 50))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    y[:, :5] = np.array([-1, -0.5, 0, 0.5, 1.0])
    x[0, 7] = np.nan
    w = g.random((4, 50))
    r = unit_ranges(4)
    out = ops.hard_histogram2d(torch.tensor(x), torch.tensor(y), torch.tensor(w), r, r, 16)
    np.testing.assert_allclose(out.numpy(), reference.histogram2d_items(x, y, 16, R2, weights=w), rtol=0, atol=1e-12)


@cpp_only
def test_cpp_kernel_weight_gradient_is_bin_gather(backend):
    x, y = clustered_points(2, 20, seed=0)
    w = torch.rand(2, 20, dtype=torch.float64, requires_grad=True)
    r = unit_ranges(2)
    assert torch.autograd.gradcheck(lambda c: ops.hard_histogram2d(x, y, c, r, r, 8), [w])


@cpp_only
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
def test_cpp_kernel_opcheck(backend, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = ((0.3 * torch.randn(2, 12, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype) for _ in range(2))
    w = (torch.rand(2, 12, generator=g, dtype=torch.float64).to(dtype) + 0.5).requires_grad_()
    r = unit_ranges(2)
    torch.library.opcheck(ops.hard_histogram2d, (x, y, w, r, r, 8))
    grad = torch.rand(2, 8, 8, dtype=dtype)
    torch.library.opcheck(ops.hard_histogram2d_backward, (grad, x, y, r, r, 8))


@cpp_only
def test_cpp_kernel_bad_arguments_raise_clear_errors(backend):
    x, y = clustered_points(2, 10, seed=1, spread=0.25)
    r = unit_ranges(2)
    with pytest.raises(RuntimeError, match=r"y must have shape \(2, 10\)"):
        ops.hard_histogram2d(x, y[:, :5], torch.ones_like(x), r, r, 8)


# ---- the Triton kernel (hard_histogram2d_triton) called directly -----------------------------------------------------

@triton_kernel_test
@pytest.mark.parametrize("bins", [5, 16, 70])  # 70: several (16..64)-wide bin blocks per item
def test_triton_kernel_matches_numpy_histogram2d_and_weight_gradient(bins):
    g = np.random.default_rng(bins)
    x, y = g.uniform(-1.1, 1.1, (2, 45)).astype(np.float32), g.uniform(-0.9, 1.1, (2, 45)).astype(np.float32)
    x[0, :bins + 1] = np.linspace(-1, 1, bins + 1)[: 45]  # every edge, the last one closed
    x[1, :4] = [np.nan, np.inf, -np.inf, 1.0]
    w = g.uniform(0.1, 2.0, (2, 45)).astype(np.float32)
    ranges = torch.tensor([[-1.0, 1.0], [-0.8, 1.0]], dtype=torch.float64)
    ex, ey = bin_edges(ranges[:1].expand(2, 2), bins), bin_edges(ranges[1:].expand(2, 2), bins)
    wt = torch.from_numpy(w).to(TRITON_DEVICE).requires_grad_()
    out = hard_histogram2d_triton(torch.from_numpy(x).to(TRITON_DEVICE), torch.from_numpy(y).to(TRITON_DEVICE), wt,
                                  ex.to(TRITON_DEVICE), ey.to(TRITON_DEVICE))
    rng2 = ((-1.0, 1.0), (-0.8, 1.0))
    assert out.dtype == torch.float32 and out.shape == (2, bins, bins)
    np.testing.assert_allclose(out.detach().cpu().numpy(), reference.histogram2d_items(x, y, bins, rng2, weights=w),
                               rtol=1e-6, atol=1e-6)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (gw,) = torch.autograd.grad((out * cot.to(TRITON_DEVICE)).sum(), wt)
    for b in range(2):  # dL/dw_n = cot[b, bin_x(n), bin_y(n)] (float64 edges, last bin closed), 0 for dropped points
        np.testing.assert_array_equal(gw[b].cpu().numpy(),
                                      reference.hard_histogram2d_weight_grad(x[b], y[b], bins, rng2, cot[b].numpy()))


@triton_kernel_test
def test_triton_kernel_opcheck_and_repeatability():
    g = torch.Generator().manual_seed(0)
    x, y = ((0.4 * torch.randn(2, 16, generator=g, dtype=torch.float64)).clamp(-1, 1) for _ in range(2))
    w = torch.rand(2, 16, generator=g, dtype=torch.float64) + 0.5
    r = torch.tensor([[-1.0, 0.9], [-0.8, 1.0]], dtype=torch.float64)
    e = bin_edges(r, 8).to(TRITON_DEVICE)
    args = (x.float().to(TRITON_DEVICE), y.float().to(TRITON_DEVICE), w.float().to(TRITON_DEVICE).requires_grad_(), e,
            e)
    torch.library.opcheck(hard_histogram2d_triton, args)
    assert torch.equal(hard_histogram2d_triton(*args), hard_histogram2d_triton(*args))


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

@kernel_test
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
def test_cuda_kernel_equals_cpu_and_numpy(dtype):
    g = np.random.default_rng(3)
    x, y, w = g.uniform(-1.2, 1.2, (4, 600)), g.uniform(-1.2, 1.2, (4, 600)), g.random((4, 600))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    y[:, :5] = [-1, -0.5, 0, 0.5, 1.0]
    x[0, 7] = np.nan
    x, y, w = (torch.tensor(a).to(dtype) for a in (x, y, w))
    r = unit_ranges(4)
    rd = r.to(DEVICE)
    out = ops.hard_histogram2d(x.to(DEVICE), y.to(DEVICE), w.to(DEVICE), rd, rd, 16).cpu()
    # same bins and the same summation order (each cell summed by one thread in point order) as the CPU kernel
    torch.testing.assert_close(out, ops.hard_histogram2d(x, y, w, r, r, 16), rtol=0, atol=0)
    ref = reference.histogram2d_items(x.double().numpy(), y.double().numpy(), 16, R2, weights=w.double().numpy())
    for b in range(4):
        np.testing.assert_allclose(out[b].double().numpy(), ref[b], rtol=1e-5 if dtype == torch.float32 else 1e-12)


@kernel_test
@pytest.mark.parametrize("dtype", kernel_dtypes())
def test_cuda_kernel_weight_gradient(dtype, tol):
    x, y, w = (t.to(dtype) for t in clustered_points(3, 50, seed=4, weights=True))
    x[0, :3] = 5.0  # outside: no gradient
    r = unit_ranges(3)
    rd = r.to(DEVICE)
    out, (gw,) = kernel_grads(lambda c: ops.hard_histogram2d(x.to(DEVICE), y.to(DEVICE), c, rd, rd, 8), [w.to(DEVICE)])
    ref, (rgw,) = kernel_grads(lambda c: ops.hard_histogram2d(x.double(), y.double(), c, r, r, 8), [w.double()])
    kernel_close(out, ref, dtype, tol)
    kernel_close(gw, rgw, dtype, tol)
    assert (gw[0, :3] == 0).all()


@kernel_test
@requires_cuda
def test_cuda_kernel_is_deterministic_on_noncontiguous_inputs_and_side_streams():
    x, y, w = (t.to(DEVICE).float() for t in clustered_points(6, 2000, seed=10, weights=True))
    r = unit_ranges(6, DEVICE)
    xt = torch.stack([x, x], -1)[..., 0]  # non-contiguous view
    assert not xt.is_contiguous()
    first = ops.hard_histogram2d(xt, y, w, r, r, 32)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = ops.hard_histogram2d(xt, y, w, r, r, 32)
    stream.synchronize()
    assert torch.equal(first, again)


@kernel_test
def test_cuda_kernel_argument_errors_name_the_argument():
    x, y, w = (t.to(DEVICE) for t in clustered_points(2, 5, seed=11, weights=True))
    r = unit_ranges(2, DEVICE)
    with pytest.raises(RuntimeError, match="range_x must be float64"):
        ops.hard_histogram2d(x, y, w, r.float(), r, 8)


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes())
def test_hard_histogram2d_on_device_equals_numpy_with_weight_gradient(backend, dtype, tol):
    g = np.random.default_rng(4)
    x, y = g.uniform(-1.2, 1.2, (4, 300)), g.uniform(-1.2, 1.2, (4, 300))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    x[0, 7] = np.nan
    w = g.integers(1, 4, (4, 300)).astype(np.float64)  # small integers: sums exact in every dtype
    x, y, w = (torch.tensor(a).to(dtype) for a in (x, y, w))
    with use(backend):
        out = hard_histogram2d(x.to(DEVICE), y.to(DEVICE), 16, R2, weights=w.to(DEVICE))
    assert out.dtype == dtype and out.device.type == torch.device(DEVICE).type
    ref = reference.histogram2d_items(x.double().numpy(), y.double().numpy(), 16, R2, weights=w.double().numpy())
    np.testing.assert_array_equal(out.cpu().double().numpy(), ref)
    compare_on_device(lambda w_: hard_histogram2d(x.to(w_.device), y.to(w_.device), 16, R2, weights=w_), [w],
                      dtype, backend, tol[dtype])


@device_test
@pytest.mark.parametrize("dtype", dtypes())
def test_hard_histogram1d_on_device_equals_numpy(dtype):
    x, _ = clustered_points(2, 41, seed=5)
    out = hard_histogram1d(x.to(dtype).to(DEVICE), 12, (-1.0, 1.0))
    np.testing.assert_array_equal(out.cpu().double().numpy(),
                                  reference.histogram_items(x.to(dtype).double().numpy(), 12, (-1.0, 1.0)))
