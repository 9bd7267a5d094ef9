"""soft_histogram1d/2d: values and gradients against the explicit-loop float64 reference (tests/reference.py) under
every backend (torch, cpp, triton) and dtype, the fused kernels called directly (cpp op, Triton op: opcheck,
gradcheck, thread count, repeatability, argument errors), masks and padding, properties, and on the device (gpu):
the CUDA kernel against the CPU kernel in float64 and the public op under each device backend."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import expit

from kdekit.ops.hard_histogram import hard_histogram1d, hard_histogram2d
from kdekit.ops.soft_histogram import (
    CUDA_MAX_BINS,
    TRITON_MAX_BINS,
    soft_histogram1d,
    soft_histogram2d,
    soft_histogram2d_triton,
)
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

R2 = ((-1.0, 1.0), (-1.0, 1.0))
ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # fresh kernel outputs are NaN until written
ops = torch.ops.kdekit


def _points(seed, shape, lo=-1.2, hi=1.2):
    g = np.random.default_rng(seed)
    x = g.uniform(lo, hi, shape)
    x.flat[:3] = [-1.0, 1.0, 0.0]  # on the edges and the centre
    return x


# ---- values vs the reference -----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # Triton interpreter: exp -> inf
@pytest.mark.parametrize("backend,dtype", backend_dtypes(dtypes=ALL_DTYPES))
@pytest.mark.parametrize("sharpness", [8.0, 64.0])
def test_values_match_reference(backend, dtype, sharpness, tol):
    x = torch.from_numpy(_points(1, (3, 25))).to(dtype)
    y = torch.from_numpy(_points(2, (3, 25))).to(dtype)
    w = torch.from_numpy(np.random.default_rng(3).uniform(0.2, 2.0, (3, 25))).to(dtype)
    xn, yn, wn = (t.double().numpy() for t in (x, y, w))  # reference on the same (rounded) inputs
    rng2 = ((-1.0, 1.0), (-0.5, 1.5))
    h1 = soft_histogram1d(x, 16, (-1, 1), sharpness, weights=w)
    with use(backend):
        h2 = soft_histogram2d(x, y, 16, rng2, sharpness, weights=w)
    assert h1.dtype == dtype and h2.dtype == dtype and h1.shape == (3, 16) and h2.shape == (3, 16, 16)
    ref1 = np.stack([reference.soft_histogram1d(xn[b], 16, (-1, 1), sharpness, wn[b]) for b in range(3)])
    ref2 = np.stack([reference.soft_histogram2d(xn[b], yn[b], 16, rng2, sharpness, wn[b]) for b in range(3)])
    for out, ref in ((h1, ref1), (h2, ref2)):
        assert torch.isfinite(out).all()
        scale = np.abs(ref).max()
        np.testing.assert_allclose(out.double().numpy() / scale, ref / scale, rtol=0, atol=tol[dtype]["atol"])


def test_per_item_ranges_and_unbatched():
    x = _points(4, (2, 20))
    r = np.array([[-1.0, 1.0], [-0.3, 0.9]])
    out = soft_histogram1d(torch.from_numpy(x), 8, torch.from_numpy(r), 8.0)
    ref = np.stack([reference.soft_histogram1d(x[b], 8, tuple(r[b]), 8.0) for b in range(2)])
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    r2 = torch.from_numpy(np.stack([r, r[::-1]], axis=1))  # (B, 2, 2)
    out2 = soft_histogram2d(torch.from_numpy(x), torch.from_numpy(x[::-1].copy()), 8, r2, 8.0)
    for b in range(2):
        ref2 = reference.soft_histogram2d(x[b], x[1 - b], 8, (tuple(r[b]), tuple(r[1 - b])), 8.0)
        np.testing.assert_allclose(out2[b].numpy(), ref2, rtol=0, atol=1e-12)
    single = soft_histogram2d(torch.from_numpy(x[0]), torch.from_numpy(x[1]), 8, R2, 8.0)
    assert single.shape == (8, 8)
    np.testing.assert_allclose(single.numpy(), reference.soft_histogram2d(x[0], x[1], 8, R2, 8.0), rtol=0, atol=1e-12)


def test_border_leakage_and_normalize():
    # per-point mass = sigmoid(s (x - lo)) - sigmoid(s (x - hi)): ~0.5 on an edge, ~0.25 in a corner at s = 8
    one = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    edge = soft_histogram1d(one, 64, (-1, 1), 8.0, mask=torch.tensor([[True, False]]))
    np.testing.assert_allclose(edge.sum().item(), expit(16.0) - 0.5, rtol=1e-12)
    corner = soft_histogram2d(-one[0, :1], one[0, :1], 64, R2, 8.0)
    np.testing.assert_allclose(corner.sum().item(), (expit(16.0) - 0.5) ** 2, rtol=1e-12)
    x, y = torch.from_numpy(_points(5, (4, 30))), torch.from_numpy(_points(6, (4, 30)))
    mask = torch.rand(4, 30, generator=torch.Generator().manual_seed(0)) < 0.7
    mask[3] = False  # an all-masked item stays zero instead of NaN
    n1 = soft_histogram1d(x, 32, (-1, 1), 8.0, mask=mask, normalize=True)
    n2 = soft_histogram2d(x, y, 32, R2, 8.0, mask=mask, normalize=True)
    torch.testing.assert_close(n1[:3].sum(-1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(n2[:3].sum((-2, -1)), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (n1[3] == 0).all() and (n2[3] == 0).all()
    raw = soft_histogram2d(x, y, 32, R2, 8.0, mask=mask)
    torch.testing.assert_close(n2[:3], raw[:3] / raw[:3].sum((-2, -1), keepdim=True), rtol=0, atol=1e-14)


def test_large_sharpness_approaches_hard_histogram_for_interior_points():
    g = np.random.default_rng(7)
    bins = 8
    x = g.uniform(-1, 1, (3, 40))
    y = g.uniform(-1, 1, (3, 40))
    for t in (x, y):  # keep every point at least 0.01 from every edge
        frac = (t + 1) / 2 * bins
        t[:] = np.clip(frac - np.floor(frac), 0.08, 0.92) * 2 / bins + np.floor(frac) * 2 / bins - 1
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    soft = soft_histogram2d(xt, yt, bins, R2, 1e4)
    torch.testing.assert_close(soft, hard_histogram2d(xt, yt, bins, R2), rtol=0, atol=1e-12)
    soft1 = soft_histogram1d(xt, bins, (-1, 1), 1e4)
    torch.testing.assert_close(soft1, hard_histogram1d(xt, bins, (-1, 1)), rtol=0, atol=1e-12)
    # at the seed's s = 8 they are far apart (the kernel spans ~7 bins of width 2/64)
    assert (soft_histogram1d(xt, 64, (-1, 1), 8.0) - hard_histogram1d(xt, 64, (-1, 1))).abs().max() > 0.5


# ---- gradients -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", backends(("torch", "cpp")))  # float64: never Triton
def test_gradcheck_float64(backend):
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(2, 5, generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    y = (torch.rand(2, 5, generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    w = (torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    mask = torch.tensor([[True, True, False, True, True], [True, False, True, True, False]])
    rng2 = ((-1.0, 1.0), (-0.5, 1.0))
    lengths = torch.tensor([4, 2])
    gradcheck = torch.autograd.gradcheck
    with use(backend):
        assert gradcheck(lambda a, b, c: soft_histogram2d(a, b, 4, rng2, 3.0, weights=c, mask=mask), (x, y, w))
        assert gradcheck(lambda a, c: soft_histogram1d(a, 5, (-1, 1), 3.0, weights=c, normalize=True), (x, w))
        assert gradcheck(lambda a, b: soft_histogram2d(a, b, 4, R2, 3.0, normalize=True, lengths=lengths), (x, y))


@pytest.mark.parametrize("backend,dtype", backend_dtypes())
def test_gradient_matches_analytic_reference(backend, dtype):
    bins, s = 12, 8.0
    xn, yn = _points(9, (2, 15)), _points(10, (2, 15))
    wn = np.random.default_rng(11).uniform(0.2, 2.0, (2, 15))
    gn = np.random.default_rng(12).normal(size=(2, bins, bins))
    x, y, w = (torch.from_numpy(t).to(dtype).requires_grad_() for t in (xn, yn, wn))
    with use(backend):
        (soft_histogram2d(x, y, bins, R2, s, weights=w) * torch.from_numpy(gn).to(dtype)).sum().backward()
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    for b in range(2):
        refs = reference.soft_histogram2d_grads(xn[b], yn[b], bins, R2, s, wn[b], gn[b])
        for t, ref in zip((x, y, w), refs):
            scale = np.abs(ref).max()
            np.testing.assert_allclose(t.grad[b].double().numpy() / scale, ref / scale, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", dtypes([torch.float64, torch.float32]))
def test_1d_gradient_matches_analytic_reference(dtype):
    """soft_histogram1d (torch path only): gradients in the points and weights against the loop reference."""
    xn = _points(15, (2, 15))
    wn = np.random.default_rng(16).uniform(0.2, 2.0, (2, 15))
    gn = np.random.default_rng(17).normal(size=(2, 10))
    x, w = (torch.from_numpy(t).to(dtype).requires_grad_() for t in (xn, wn))
    (soft_histogram1d(x, 10, (-1, 1), 8.0, weights=w) * torch.from_numpy(gn).to(dtype)).sum().backward()
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    for b in range(2):
        refs = reference.soft_histogram1d_grads(xn[b], 10, (-1, 1), 8.0, wn[b], gn[b])
        for t, ref in zip((x, w), refs):
            scale = np.abs(ref).max()
            np.testing.assert_allclose(t.grad[b].double().numpy() / scale, ref / scale, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", backends(("torch", "cpp")))
def test_mask_equals_dropping_points_values_and_gradients(backend):
    g = np.random.default_rng(13)
    lengths = [6, 1, 11]
    xn, yn = g.uniform(-1.1, 1.1, (3, 11)), g.uniform(-1.1, 1.1, (3, 11))
    wn = g.uniform(0.5, 1.5, (3, 11))
    pad = np.arange(11)[None, :] >= np.array(lengths)[:, None]
    xn[pad], yn[pad], wn[pad] = np.nan, np.inf, np.nan  # padding must neither poison values nor gradients
    x, y, w = (torch.from_numpy(t).requires_grad_() for t in (xn, yn, wn))
    gn = torch.from_numpy(g.normal(size=(3, 8, 8)))
    with use(backend):
        out = soft_histogram2d(x, y, 8, R2, 8.0, weights=w, mask=torch.from_numpy(~pad))
    assert torch.isfinite(out).all()
    (out * gn).sum().backward()
    for t in (x, y, w):
        assert torch.isfinite(t.grad).all() and (t.grad[torch.from_numpy(pad)] == 0).all()
    for b, n in enumerate(lengths):
        xb, yb, wb = (torch.from_numpy(t[b, :n]).requires_grad_() for t in (xn, yn, wn))
        with use(backend):
            alone = soft_histogram2d(xb, yb, 8, R2, 8.0, weights=wb)
        torch.testing.assert_close(out[b], alone, rtol=0, atol=1e-13)
        (alone * gn[b]).sum().backward()
        for full, part in zip((x, y, w), (xb, yb, wb)):
            torch.testing.assert_close(full.grad[b, :n], part.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend,dtype", backend_dtypes(("cpp", "triton"), ALL_DTYPES))
def test_fused_backend_matches_torch_path_at_the_same_dtype(backend, dtype, tol):
    """Values and gradients of a weighted batch padded by lengths (NaN in the padding) against the torch path run in
    the same dtype; the per-dtype tolerance scales with the largest reference value."""
    g = np.random.default_rng(14)
    xn, yn, wn = g.uniform(-1.2, 1.2, (4, 33)), g.uniform(-1.2, 1.2, (4, 33)), g.uniform(0.2, 2.0, (4, 33))
    lengths = torch.tensor([33, 20, 1, 0])
    pad = (torch.arange(33)[None, :] >= lengths[:, None]).numpy()
    xn[pad], wn[pad] = np.nan, np.inf
    cot = torch.from_numpy(g.normal(size=(4, 20, 20))).to(dtype)

    def run(name):
        x, y, w = (torch.from_numpy(t).to(dtype).requires_grad_() for t in (xn, yn, wn))
        with use(name):
            h = soft_histogram2d(x, y, 20, ((-1, 1), (-0.8, 1.1)), 8.0, weights=w, lengths=lengths)
        return (h, *torch.autograd.grad((h * cot).sum(), (x, y, w)))

    for got, ref in zip(run(backend), run("torch")):
        assert got.dtype == dtype and torch.isfinite(got).all()
        scale = ref.abs().max().double()
        torch.testing.assert_close(got.double() / scale, ref.double() / scale, atol=tol[dtype]["atol"], rtol=0)
    assert (run(backend)[0][3] == 0).all()  # an all-padded item


@pytest.mark.parametrize("backend,dtype", backend_dtypes())
def test_masked_batch_matches_torch_path_values_and_gradients(backend, dtype, tol):
    """A mask (a NaN point among the masked ones) and weights that require grad: values and the gradients of a
    linear weighting, per backend, against the torch path at the same dtype (atol and rtol of the dtype)."""
    g = torch.Generator().manual_seed(0)
    n = 16 if backend == "triton" else 17
    x = (0.4 * torch.randn(3, n, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    y = (0.4 * torch.randn(3, n, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, -3:] = False
    x[1, -1] = float("nan")  # masked NaN must not leak

    def run(name):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        w = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype).requires_grad_()
        with use(name):
            h = soft_histogram2d(xs, ys, 16, R2, 8.0, mask=mask, weights=w)
        cot = torch.linspace(-1, 1, h.numel(), dtype=dtype).reshape(h.shape)
        grads = torch.autograd.grad((h * cot).sum(), (xs, ys, w))
        return (h, *grads)

    for got, ref in zip(run(backend), run("torch")):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, **tol[dtype])


def test_bad_arguments_raise():
    x = torch.rand(2, 5)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sharpness"):
            soft_histogram1d(x, 4, (0, 1), bad)
    with pytest.raises(TypeError, match="sharpness"):
        soft_histogram1d(x, 4, (0, 1), torch.tensor(8.0))
    with pytest.raises(ValueError, match="bins"):
        soft_histogram2d(x, x, 1, R2, 8.0)
    with pytest.raises(ValueError, match="lo < hi"):
        soft_histogram2d(x, x, 4, ((0, 1), (1, 0)), 8.0)
    with pytest.raises(ValueError, match="range must be"):
        soft_histogram2d(x, x, 4, torch.zeros(3, 2, 2), 8.0)
    with pytest.raises(ValueError, match="empty batch"):
        soft_histogram1d(torch.rand(0, 3), 4, (0, 1), 8.0)
    with pytest.raises(ValueError, match="either mask or lengths"):
        soft_histogram2d(x, x, 4, R2, 8.0, mask=torch.ones(2, 5, dtype=torch.bool), lengths=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="y has dtype"):
        soft_histogram2d(x, x.double(), 4, R2, 8.0)
    with pytest.raises(ValueError, match="lengths must lie"):
        soft_histogram1d(x, 4, (0, 1), 8.0, lengths=torch.tensor([1, 6]))


# ---- property tests -------------------------------------------------------------------------------------------------

@st.composite
def batches(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 8))
    coord = st.floats(-1.5, 1.5, allow_nan=False, width=64)
    x = np.array(draw(st.lists(coord, min_size=b * n, max_size=b * n))).reshape(b, n)
    y = np.array(draw(st.lists(coord, min_size=b * n, max_size=b * n))).reshape(b, n)
    lengths = np.array(draw(st.lists(st.integers(0, n), min_size=b, max_size=b)))
    return x, y, lengths, draw(st.integers(2, 9)), draw(st.sampled_from([2.0, 8.0, 40.0]))


@given(batches(), st.randoms(use_true_random=False))
def test_property_permutation_invariance(data, rnd):
    x, y, _, bins, s = data
    perm = np.array(rnd.sample(range(x.shape[1]), x.shape[1]))
    a = soft_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, R2, s)
    b = soft_histogram2d(torch.from_numpy(x[:, perm]), torch.from_numpy(y[:, perm]), bins, R2, s)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@given(batches())
def test_property_mass_is_telescoped_sigmoid(data):
    x, y, _, bins, s = data
    h1 = soft_histogram1d(torch.from_numpy(x), bins, (-1, 1), s)
    mass_x = expit(s * (x + 1)) - expit(s * (x - 1))
    np.testing.assert_allclose(h1.sum(-1).numpy(), mass_x.sum(-1), rtol=0, atol=1e-12)
    h2 = soft_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, R2, s)
    mass_y = expit(s * (y + 1)) - expit(s * (y - 1))
    np.testing.assert_allclose(h2.sum((-2, -1)).numpy(), (mass_x * mass_y).sum(-1), rtol=0, atol=1e-12)


@given(batches())
def test_property_mask_equals_dropping_and_batching_is_transparent(data):
    x, y, lengths, bins, s = data
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batched = soft_histogram2d(xt, yt, bins, R2, s, lengths=torch.from_numpy(lengths))
    mask = torch.arange(x.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
    batched1 = soft_histogram1d(xt, bins, (-1, 1), s, mask=mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(batched[b], soft_histogram2d(xt[b, :n], yt[b, :n], bins, R2, s), rtol=0, atol=1e-14)
        torch.testing.assert_close(batched1[b], soft_histogram1d(xt[b, :n], bins, (-1, 1), s), rtol=0, atol=1e-14)


# ---- backend choice --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_range_gradient_on_the_default_backend_equals_the_torch_path(backend):
    """The kernels differentiate points and weights only: a range that requires grad runs the torch path."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 30, generator=g, dtype=torch.float64) * 0.3
    y = torch.randn(2, 30, generator=g, dtype=torch.float64) * 0.3
    weight = torch.rand(8, 8, generator=g, dtype=torch.float64)
    grads = {}
    for name in ("torch", backend):
        rng = torch.tensor([[-1.0, 1.1], [-0.9, 1.0]], dtype=torch.float64, requires_grad=True)
        with use(name):
            (soft_histogram2d(x, y, 8, rng, 8.0) * weight).sum().backward()
        grads[name] = rng.grad
    assert grads[backend] is not None and grads[backend].abs().sum() > 0
    torch.testing.assert_close(grads[backend], grads["torch"], rtol=0, atol=0)


@pytest.mark.parametrize("cuda_available", [True, False])
def test_automatic_choice_takes_a_kernel_that_supports_the_bins(monkeypatch, cuda_available):
    """On a GPU the automatic choice is Triton, which takes at most TRITON_MAX_BINS bins (grid 256 raised there):
    beyond it the CUDA kernel (up to CUDA_MAX_BINS, when built), then the torch path; a forced backend is kept."""
    from kdekit.ops import soft_histogram as sh

    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    monkeypatch.setattr(sh, "_status", lambda name: (cuda_available, "test"))
    assert sh._backend_for_bins("triton", sh.TRITON_MAX_BINS) == "triton"
    assert sh._backend_for_bins("triton", sh.CUDA_MAX_BINS) == ("cuda" if cuda_available else "torch")
    assert sh._backend_for_bins("triton", sh.CUDA_MAX_BINS + 1) == "torch"
    assert sh._backend_for_bins("cuda", 2 * sh.CUDA_MAX_BINS) == "torch"
    assert sh._backend_for_bins("cpp", 1024) == "cpp"
    with use("triton"):
        assert sh._backend_for_bins("triton", 2 * sh.TRITON_MAX_BINS) == "triton"


# ---- the cpp kernel (torch.ops.kdekit.soft_histogram2d) called directly ----------------------------------------------

cpp_only = pytest.mark.parametrize("backend", backends(("cpp",)))


@cpp_only
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
@pytest.mark.parametrize("bins", [2, 24, 70])  # padding of the bins axis to the vector width, one and several blocks
def test_cpp_kernel_matches_torch_reference(backend, dtype, bins, tol):
    x, y = (t.to(dtype) for t in clustered_points(3, 37, seed=0))
    w = torch.rand(3, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    r = unit_ranges(3)
    out = ops.soft_histogram2d(x, y, w, r, r, bins, 8.0)
    with use("torch"):
        ref = soft_histogram2d(x.double(), y.double(), bins, R2, 8.0, weights=w.double())
    torch.testing.assert_close(out.double(), ref, **tol[dtype])


@cpp_only
def test_cpp_kernel_gradcheck(backend):
    x, y = clustered_points(2, 9, seed=0)
    w = torch.rand(2, 9, dtype=torch.float64) + 0.5
    r = unit_ranges(2)
    args = [t.requires_grad_() for t in (x, y, w)]
    assert torch.autograd.gradcheck(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, 7, 5.0), args)


@cpp_only
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
def test_cpp_kernel_opcheck(backend, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = ((0.3 * torch.randn(2, 12, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype) for _ in range(2))
    w = torch.rand(2, 12, generator=g, dtype=torch.float64).to(dtype) + 0.5
    r = unit_ranges(2)
    x, y, w = (t.requires_grad_() for t in (x, y, w))
    torch.library.opcheck(ops.soft_histogram2d, (x, y, w, r, r, 8, 8.0))
    grad = torch.rand(2, 8, 8, dtype=dtype)
    torch.library.opcheck(ops.soft_histogram2d_backward, (grad, x.detach(), y.detach(), w.detach(), r, r, 8, 8.0))


@cpp_only
def test_cpp_kernel_results_do_not_depend_on_thread_count(backend):
    """Bitwise equal with 1 and 2 threads; 48 items of 200 points and 64 bins are split across threads (item_grain:
    ~2^26 flops per chunk), forward and backward."""
    xs, ys = (t.float() for t in clustered_points(48, 200, seed=12))
    ws = torch.rand(48, 200, generator=torch.Generator().manual_seed(13))
    grad = torch.randn(48, 64, 64, generator=torch.Generator().manual_seed(14))
    rs = unit_ranges(48)
    threads = torch.get_num_threads()
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            outs.append((ops.soft_histogram2d(xs, ys, ws, rs, rs, 64, 8.0),
                         *ops.soft_histogram2d_backward(grad, xs, ys, ws, rs, rs, 64, 8.0)))
        finally:
            torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@cpp_only
def test_cpp_kernel_bad_arguments_raise_clear_errors(backend):
    x, y = clustered_points(2, 10, seed=1, spread=0.25)
    r = unit_ranges(2)
    with pytest.raises(RuntimeError, match="range_x must be float64"):
        ops.soft_histogram2d(x, y, torch.ones_like(x), r.float(), r, 8, 8.0)


# ---- the Triton kernel (soft_histogram2d_triton) called directly -----------------------------------------------------

def _triton_inputs(B=2, N=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    y = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1)
    w = torch.rand(B, N, generator=g, dtype=torch.float64) + 0.5
    r = torch.tensor([[-1.0, 0.9], [-0.8, 1.0]], dtype=torch.float64)[:B].contiguous()
    return (t.to(TRITON_DEVICE) for t in (x, y, w, r))


@triton_kernel_test
@pytest.mark.parametrize("dtype", dtypes([torch.float16, torch.float32]))
def test_triton_kernel_values_and_gradients_match_float64_reference(dtype):
    x, y, w, r = _triton_inputs()
    bins = 12  # not a power of two: masked bin lanes
    args = [t.to(dtype).requires_grad_() for t in (x, y, w)]
    out = soft_histogram2d_triton(*args, r, r, bins=bins, sharpness=8.0)
    refs = [t.to(dtype).cpu().double().requires_grad_() for t in (x, y, w)]  # the same (rounded) inputs, float64
    with use("torch"):
        ref = soft_histogram2d(refs[0], refs[1], bins, torch.stack([r, r], 1).cpu(), 8.0, weights=refs[2])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-5, rtol=1e-4)  # float32 accumulation
    cot = torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).reshape(ref.shape)
    got = torch.autograd.grad((out * cot.to(out)).sum(), args)
    want = torch.autograd.grad((ref * cot).sum(), refs)
    for g, gr in zip(got, want):
        assert g.dtype == dtype
        atol = 1e-4 if dtype == torch.float32 else 2e-2  # the gradient itself is rounded to float16
        torch.testing.assert_close(g.double().cpu(), gr, atol=atol * gr.abs().max().item(), rtol=0)


@triton_kernel_test
def test_triton_kernel_opcheck_and_repeatability():
    x, y, w, r = _triton_inputs(N=16)
    args = (x.float().requires_grad_(), y.float().requires_grad_(), w.float().requires_grad_(), r, r)
    options = dict(bins=16, sharpness=8.0)
    torch.library.opcheck(soft_histogram2d_triton, args, options)
    assert torch.equal(soft_histogram2d_triton(*args, **options), soft_histogram2d_triton(*args, **options))


@triton_kernel_test
def test_triton_kernel_too_many_bins_is_a_clear_error():
    x, y, w, r = _triton_inputs()
    with pytest.raises(ValueError, match=f"bins <= {TRITON_MAX_BINS}"):
        soft_histogram2d_triton(x.float(), y.float(), w.float(), r, r, bins=TRITON_MAX_BINS + 1, sharpness=8.0)


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

@kernel_test
@pytest.mark.parametrize("dtype", kernel_dtypes())
def test_cuda_kernel_matches_cpu_float64(dtype, tol):
    x, y, w = (t.to(dtype) for t in clustered_points(3, 41, seed=1, weights=True))  # rounded once: same inputs
    r = unit_ranges(3)
    rd = r.to(DEVICE)
    bins, s = 20, 8.0
    out, grads = kernel_grads(lambda a, b, c: ops.soft_histogram2d(a, b, c, rd, rd, bins, s),
                              [t.to(DEVICE) for t in (x, y, w)])
    ref, ref_grads = kernel_grads(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, bins, s),
                                  [t.double() for t in (x, y, w)])
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    kernel_close(out, ref, dtype, tol)
    for g, rg in zip(grads, ref_grads):
        kernel_close(g, rg, dtype, tol)


@kernel_test
def test_cuda_kernel_gradcheck():
    x, y, w = (t.to(DEVICE) for t in clustered_points(2, 9, seed=2, weights=True))
    r = unit_ranges(2, DEVICE)
    args = [t.requires_grad_() for t in (x, y, w)]
    assert torch.autograd.gradcheck(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, 7, 5.0), args)


@kernel_test
@requires_cuda
def test_cuda_kernel_is_deterministic_on_noncontiguous_inputs_and_side_streams():
    x, y, w = (t.to(DEVICE).float() for t in clustered_points(6, 2000, seed=10, weights=True))
    r = unit_ranges(6, DEVICE)
    xt = torch.stack([x, x], -1)[..., 0]  # non-contiguous view
    assert not xt.is_contiguous()
    first = ops.soft_histogram2d(xt, y, w, r, r, 32, 8.0)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = ops.soft_histogram2d(xt, y, w, r, r, 32, 8.0)
    stream.synchronize()
    assert torch.equal(first, again)


@kernel_test
def test_cuda_kernel_argument_errors_name_the_argument():
    x, y, w = (t.to(DEVICE) for t in clustered_points(2, 5, seed=11, weights=True))
    r = unit_ranges(2, DEVICE)
    with pytest.raises(RuntimeError, match="weights must have shape"):
        ops.soft_histogram2d(x, y, w[:, :3], r, r, 8, 8.0)
    if DEVICE == "cuda":  # the CUDA backward's per-thread buffers; the CPU kernel takes any bins
        with pytest.raises(RuntimeError, match=f"bins <= {CUDA_MAX_BINS}"):
            ops.soft_histogram2d_backward(torch.rand(2, 300, 300, device=DEVICE, dtype=x.dtype), x, y, w, r, r, 300,
                                          8.0)


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes())
def test_soft_histogram2d_on_device(backend, dtype, tol):
    x, y = clustered_points(3, 37, seed=1)
    w = torch.rand(3, 37, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.2
    mask = torch.rand(3, 37, generator=torch.Generator().manual_seed(3)) > 0.2
    rng = torch.tensor([[[-1.0, 1.0], [-0.8, 1.1]]], dtype=torch.float64).expand(3, 2, 2)

    def fn(x, y, w):
        return soft_histogram2d(x, y, 20, rng.to(x.device), 8.0, weights=w, mask=mask.to(x.device))

    compare_on_device(fn, [x, y, w], dtype, backend, tol[dtype])


@device_test
@pytest.mark.parametrize("dtype", dtypes())
def test_soft_histogram1d_on_device(dtype, tol):
    x, _ = clustered_points(2, 41, seed=5)
    compare_on_device(lambda x: soft_histogram1d(x, 12, (-1.0, 1.0), 6.0), [x], dtype, "auto", tol[dtype])


@device_test
def test_more_bins_than_triton_takes_run_on_the_automatic_backend(tol):
    """grid 256 (bins > TRITON_MAX_BINS): the automatic choice moves to a kernel that takes them."""
    x, y = clustered_points(2, 30, seed=26)
    compare_on_device(lambda x, y: soft_histogram2d(x, y, 256, R2, 8.0), [x, y], torch.float32, "auto",
                      tol[torch.float32])
