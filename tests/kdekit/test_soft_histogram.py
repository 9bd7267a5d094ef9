import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import expit

from kdekit._backend import backends, use_backend
from kdekit.ops.hard_histogram import hard_histogram1d, hard_histogram2d
from kdekit.ops.soft_histogram import soft_histogram1d, soft_histogram2d

R2 = ((-1.0, 1.0), (-1.0, 1.0))
# soft_histogram2d backends runnable here (triton: the interpreter on CPU tensors, float64 never goes to it)
BACKENDS = [name for name in ("torch", "cpp", "triton") if backends()[name][0]]


def backend_dtypes(backends, dtypes):
    """(backend, dtype) pairs to test; float64 never goes to Triton (select() runs the torch path)."""
    return [(b, d) for b in backends for d in dtypes if not (b == "triton" and d == torch.float64)]


# ---- independent float64 reference: the seed's centre formula, explicit loops ---------------------------------------

def ref_mass(x, bins, lo, hi, s):
    """A[n, i] = expit(s (x_n - c_i + d/2)) - expit(s (x_n - c_i - d/2)), c_i = lo + d (i + 1/2); and dA/dx."""
    d = (hi - lo) / bins
    a = np.zeros((len(x), bins))
    da = np.zeros((len(x), bins))
    for n, xn in enumerate(x):
        for i in range(bins):
            c = lo + d * (i + 0.5)
            left, right = expit(s * (xn - c + d / 2)), expit(s * (xn - c - d / 2))
            a[n, i] = left - right
            da[n, i] = s * (left * (1 - left) - right * (1 - right))
    return a, da


def ref_hist1d(x, bins, rng_, s, w=None):
    w = np.ones(len(x)) if w is None else w
    a, _ = ref_mass(x, bins, *rng_, s)
    return (w[:, None] * a).sum(0)


def ref_hist2d(x, y, bins, rng2, s, w=None):
    w = np.ones(len(x)) if w is None else w
    ax, _ = ref_mass(x, bins, *rng2[0], s)
    ay, _ = ref_mass(y, bins, *rng2[1], s)
    return np.einsum("n,ni,nj->ij", w, ax, ay)


def ref_grad2d(x, y, bins, rng2, s, w, g):
    """Gradients of sum(H * g) w.r.t. x, y, w for one item."""
    ax, dax = ref_mass(x, bins, *rng2[0], s)
    ay, day = ref_mass(y, bins, *rng2[1], s)
    gx = np.einsum("n,ni,nj,ij->n", w, dax, ay, g)
    gy = np.einsum("n,ni,nj,ij->n", w, ax, day, g)
    gw = np.einsum("ni,nj,ij->n", ax, ay, g)
    return gx, gy, gw


def _points(seed, shape, lo=-1.2, hi=1.2):
    g = np.random.default_rng(seed)
    x = g.uniform(lo, hi, shape)
    x.flat[:3] = [-1.0, 1.0, 0.0]  # on the edges and the centre
    return x


# ---- values vs reference --------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # Triton interpreter: exp -> inf
@pytest.mark.parametrize("backend,dtype",
                         backend_dtypes(BACKENDS, [torch.float64, torch.float32, torch.float16, torch.bfloat16]))
@pytest.mark.parametrize("sharpness", [8.0, 64.0])
def test_values_match_reference(backend, dtype, sharpness, tol):
    x = torch.from_numpy(_points(1, (3, 25))).to(dtype)
    y = torch.from_numpy(_points(2, (3, 25))).to(dtype)
    w = torch.from_numpy(np.random.default_rng(3).uniform(0.2, 2.0, (3, 25))).to(dtype)
    xn, yn, wn = (t.double().numpy() for t in (x, y, w))  # reference on the same (rounded) inputs
    rng2 = ((-1.0, 1.0), (-0.5, 1.5))
    h1 = soft_histogram1d(x, 16, (-1, 1), sharpness, weights=w)
    with use_backend(backend):
        h2 = soft_histogram2d(x, y, 16, rng2, sharpness, weights=w)
    assert h1.dtype == dtype and h2.dtype == dtype and h1.shape == (3, 16) and h2.shape == (3, 16, 16)
    ref1 = np.stack([ref_hist1d(xn[b], 16, (-1, 1), sharpness, wn[b]) for b in range(3)])
    ref2 = np.stack([ref_hist2d(xn[b], yn[b], 16, rng2, sharpness, wn[b]) for b in range(3)])
    for out, ref in ((h1, ref1), (h2, ref2)):
        assert torch.isfinite(out).all()
        scale = np.abs(ref).max()
        np.testing.assert_allclose(out.double().numpy() / scale, ref / scale, rtol=0, atol=tol[dtype]["atol"])


def test_per_item_ranges_and_unbatched():
    x = _points(4, (2, 20))
    r = np.array([[-1.0, 1.0], [-0.3, 0.9]])
    out = soft_histogram1d(torch.from_numpy(x), 8, torch.from_numpy(r), 8.0)
    ref = np.stack([ref_hist1d(x[b], 8, tuple(r[b]), 8.0) for b in range(2)])
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    r2 = torch.from_numpy(np.stack([r, r[::-1]], axis=1))  # (B, 2, 2)
    out2 = soft_histogram2d(torch.from_numpy(x), torch.from_numpy(x[::-1].copy()), 8, r2, 8.0)
    for b in range(2):
        ref2 = ref_hist2d(x[b], x[1 - b], 8, (tuple(r[b]), tuple(r[1 - b])), 8.0)
        np.testing.assert_allclose(out2[b].numpy(), ref2, rtol=0, atol=1e-12)
    single = soft_histogram2d(torch.from_numpy(x[0]), torch.from_numpy(x[1]), 8, R2, 8.0)
    assert single.shape == (8, 8)
    np.testing.assert_allclose(single.numpy(), ref_hist2d(x[0], x[1], 8, R2, 8.0), rtol=0, atol=1e-12)


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

@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_gradcheck_float64(backend):
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(2, 5, generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    y = (torch.rand(2, 5, generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    w = (torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    mask = torch.tensor([[True, True, False, True, True], [True, False, True, True, False]])
    rng2 = ((-1.0, 1.0), (-0.5, 1.0))
    lengths = torch.tensor([4, 2])
    gradcheck = torch.autograd.gradcheck
    with use_backend(backend):
        assert gradcheck(lambda a, b, c: soft_histogram2d(a, b, 4, rng2, 3.0, weights=c, mask=mask), (x, y, w))
        assert gradcheck(lambda a, c: soft_histogram1d(a, 5, (-1, 1), 3.0, weights=c, normalize=True), (x, w))
        assert gradcheck(lambda a, b: soft_histogram2d(a, b, 4, R2, 3.0, normalize=True, lengths=lengths), (x, y))


@pytest.mark.parametrize("backend,dtype", backend_dtypes(BACKENDS, [torch.float64, torch.float32]))
def test_gradient_matches_analytic_reference(backend, dtype):
    bins, s = 12, 8.0
    xn, yn = _points(9, (2, 15)), _points(10, (2, 15))
    wn = np.random.default_rng(11).uniform(0.2, 2.0, (2, 15))
    gn = np.random.default_rng(12).normal(size=(2, bins, bins))
    x, y, w = (torch.from_numpy(t).to(dtype).requires_grad_() for t in (xn, yn, wn))
    with use_backend(backend):
        (soft_histogram2d(x, y, bins, R2, s, weights=w) * torch.from_numpy(gn).to(dtype)).sum().backward()
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    for b in range(2):
        refs = ref_grad2d(xn[b], yn[b], bins, R2, s, wn[b], gn[b])
        for t, ref in zip((x, y, w), refs):
            scale = np.abs(ref).max()
            np.testing.assert_allclose(t.grad[b].double().numpy() / scale, ref / scale, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_mask_equals_dropping_points_values_and_gradients(backend):
    g = np.random.default_rng(13)
    lengths = [6, 1, 11]
    xn, yn = g.uniform(-1.1, 1.1, (3, 11)), g.uniform(-1.1, 1.1, (3, 11))
    wn = g.uniform(0.5, 1.5, (3, 11))
    pad = np.arange(11)[None, :] >= np.array(lengths)[:, None]
    xn[pad], yn[pad], wn[pad] = np.nan, np.inf, np.nan  # padding must neither poison values nor gradients
    x, y, w = (torch.from_numpy(t).requires_grad_() for t in (xn, yn, wn))
    gn = torch.from_numpy(g.normal(size=(3, 8, 8)))
    with use_backend(backend):
        out = soft_histogram2d(x, y, 8, R2, 8.0, weights=w, mask=torch.from_numpy(~pad))
    assert torch.isfinite(out).all()
    (out * gn).sum().backward()
    for t in (x, y, w):
        assert torch.isfinite(t.grad).all() and (t.grad[torch.from_numpy(pad)] == 0).all()
    for b, n in enumerate(lengths):
        xb, yb, wb = (torch.from_numpy(t[b, :n]).requires_grad_() for t in (xn, yn, wn))
        with use_backend(backend):
            alone = soft_histogram2d(xb, yb, 8, R2, 8.0, weights=wb)
        torch.testing.assert_close(out[b], alone, rtol=0, atol=1e-13)
        (alone * gn[b]).sum().backward()
        for full, part in zip((x, y, w), (xb, yb, wb)):
            torch.testing.assert_close(full.grad[b, :n], part.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend,dtype", backend_dtypes([b for b in BACKENDS if b != "torch"],
                                                         [torch.float16, torch.bfloat16, torch.float32, torch.float64]))
def test_fused_backend_matches_torch_path_at_the_same_dtype(backend, dtype, tol):
    """Values and gradients of a masked, weighted batch (NaN in the padding) against the torch path run in the same
    dtype; the per-dtype tolerance scales with the largest reference value."""
    g = np.random.default_rng(14)
    xn, yn, wn = g.uniform(-1.2, 1.2, (4, 33)), g.uniform(-1.2, 1.2, (4, 33)), g.uniform(0.2, 2.0, (4, 33))
    lengths = torch.tensor([33, 20, 1, 0])
    pad = (torch.arange(33)[None, :] >= lengths[:, None]).numpy()
    xn[pad], wn[pad] = np.nan, np.inf
    cot = torch.from_numpy(g.normal(size=(4, 20, 20))).to(dtype)

    def run(name):
        x, y, w = (torch.from_numpy(t).to(dtype).requires_grad_() for t in (xn, yn, wn))
        with use_backend(name):
            h = soft_histogram2d(x, y, 20, ((-1, 1), (-0.8, 1.1)), 8.0, weights=w, lengths=lengths)
        return (h, *torch.autograd.grad((h * cot).sum(), (x, y, w)))

    for got, ref in zip(run(backend), run("torch")):
        assert got.dtype == dtype and torch.isfinite(got).all()
        scale = ref.abs().max().double()
        torch.testing.assert_close(got.double() / scale, ref.double() / scale, atol=tol[dtype]["atol"], rtol=0)
    assert (run(backend)[0][3] == 0).all()  # an all-padded item


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


@pytest.mark.skipif(not backends()["cpp"][0], reason="kdekit._C not built")
def test_range_gradient_on_the_default_backend_equals_the_torch_path():
    """The kernels differentiate points and weights only: a range that requires grad runs the torch path."""
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(2, 30, generator=g, dtype=torch.float64) * 0.3, torch.randn(2, 30, generator=g, dtype=torch.float64) * 0.3
    weight = torch.rand(8, 8, generator=g, dtype=torch.float64)
    grads = {}
    for name in ("torch", "cpp"):
        rng = torch.tensor([[-1.0, 1.1], [-0.9, 1.0]], dtype=torch.float64, requires_grad=True)
        with use_backend(name):
            (soft_histogram2d(x, y, 8, rng, 8.0) * weight).sum().backward()
        grads[name] = rng.grad
    assert grads["cpp"] is not None and grads["cpp"].abs().sum() > 0
    torch.testing.assert_close(grads["cpp"], grads["torch"], rtol=0, atol=0)


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
    with use_backend("triton"):
        assert sh._backend_for_bins("triton", 2 * sh.TRITON_MAX_BINS) == "triton"
