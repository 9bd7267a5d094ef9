import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdekit._backend import backends, use_backend
from kdekit.ops.hard_histogram import hard_histogram1d, hard_histogram2d

NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
R2 = ((-1.0, 1.0), (-1.0, 1.0))
# hard_histogram2d backends runnable here (triton: the interpreter on CPU tensors, float64 never goes to it)
BACKENDS = [name for name in ("torch", "cpp", "triton") if backends()[name][0]]
BACKEND_DTYPES = [(b, d) for b in BACKENDS for d in (torch.float32, torch.float64)
                  if (b, d) != ("triton", torch.float64)]
# bins/range pairs: exactly representable edges, and edges float32 cannot represent (1-D and 2-D rules differ there)
CASES = [(64, (-1.0, 1.0)), (10, (-0.8, 0.7)), (7, (0.1, 0.3))]


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
    ref = np.stack([np.histogram(row, bins, range=rng_)[0] for row in x])
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
@pytest.mark.parametrize("bins,rng_", CASES)
def test_2d_matches_numpy_histogram2d(backend, dtype, bins, rng_):
    x = _data(2, (3, 150), rng_, bins, NP_DTYPES[dtype])
    y_rng = (rng_[0] - 0.25, rng_[1])
    y = _data(3, (3, 150), y_rng, bins, NP_DTYPES[dtype])
    with use_backend(backend):
        out = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), bins, (rng_, y_rng))
    assert out.dtype == dtype and out.shape == (3, bins, bins)
    ref = np.stack([np.histogram2d(a, b, bins, range=(rng_, y_rng))[0] for a, b in zip(x, y)])
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_edge_rule_differs_between_1d_and_2d_like_numpy(backend):
    # float32(-0.8) < -0.8: numpy.histogram (float32 edges) puts it in bin 1, numpy.histogram2d (float64 edges) in bin 0
    x = torch.tensor([[-0.8]], dtype=torch.float32)
    np.testing.assert_array_equal(hard_histogram1d(x, 10, (-1.0, 1.0))[0].numpy(),
                                  np.histogram(x.numpy()[0], 10, range=(-1, 1))[0])
    with use_backend(backend):
        h2 = hard_histogram2d(x, torch.zeros_like(x), 10, ((-1.0, 1.0), (-1.0, 1.0)))[0].sum(-1)
    ref2 = np.histogram2d(x.numpy()[0], np.zeros(1, np.float32), 10, range=((-1, 1), (-1, 1)))[0].sum(-1)
    np.testing.assert_array_equal(h2.numpy(), ref2)
    assert hard_histogram1d(x, 10, (-1.0, 1.0))[0, 1] == 1 and h2[0] == 1


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
def test_likert_ties(backend, dtype):
    g = np.random.default_rng(4)
    levels = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    x = levels[g.integers(0, 5, (6, 40))]
    y = levels[g.integers(0, 5, (6, 40))]
    for bins in (4, 5, 64):
        with use_backend(backend):
            out = hard_histogram2d(torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype), bins, R2)
        ref = np.stack([np.histogram2d(a, b, bins, range=((-1, 1), (-1, 1)))[0] for a, b in zip(x, y)])
        np.testing.assert_array_equal(out.numpy(), ref)
        np.testing.assert_array_equal(hard_histogram1d(torch.from_numpy(x), bins, (-1, 1)).numpy(),
                                      np.stack([np.histogram(a, bins, range=(-1, 1))[0] for a in x]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_item_ranges(backend):
    g = np.random.default_rng(5)
    x = g.normal(size=(4, 80))
    y = g.normal(size=(4, 80))
    r = np.stack([np.sort(g.normal(size=2)) * 2 for _ in range(4)])
    ry = np.stack([np.sort(g.normal(size=2)) * 2 for _ in range(4)])
    out1 = hard_histogram1d(torch.from_numpy(x), 9, torch.from_numpy(r))
    ref1 = np.stack([np.histogram(a, 9, range=tuple(ri))[0] for a, ri in zip(x, r)])
    np.testing.assert_array_equal(out1.numpy(), ref1)
    r2 = torch.from_numpy(np.stack([r, ry], axis=1))  # (B, 2, 2)
    with use_backend(backend):  # float64 under "triton" runs the torch path
        out2 = hard_histogram2d(torch.from_numpy(x).float(), torch.from_numpy(y).float(), 9, r2)
    ref2 = np.stack([np.histogram2d(a, b, 9, range=(tuple(ri), tuple(si)))[0]
                     for a, b, ri, si in zip(x.astype(np.float32), y.astype(np.float32), r, ry)])
    np.testing.assert_array_equal(out2.numpy(), ref2)


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES)
def test_weights_match_numpy_and_weight_gradient_is_the_bin_gather(backend, dtype):
    x = _data(6, (3, 60), (-1.0, 1.0), 8, NP_DTYPES[dtype])
    y = _data(7, (3, 60), (-1.0, 1.0), 8, NP_DTYPES[dtype])
    w = np.random.default_rng(8).uniform(0.1, 2.0, (3, 60)).astype(NP_DTYPES[dtype])
    out1 = hard_histogram1d(torch.from_numpy(x), 8, (-1, 1), weights=torch.from_numpy(w))
    ref1 = np.stack([np.histogram(a, 8, range=(-1, 1), weights=wi)[0] for a, wi in zip(x, w)])
    np.testing.assert_allclose(out1.numpy(), ref1, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    wt = torch.from_numpy(w).requires_grad_()
    with use_backend(backend):
        out2 = hard_histogram2d(torch.from_numpy(x), torch.from_numpy(y), 8, R2, weights=wt)
    ref2 = np.stack([np.histogram2d(a, b, 8, range=((-1, 1), (-1, 1)), weights=wi)[0] for a, b, wi in zip(x, y, w)])
    np.testing.assert_allclose(out2.detach().numpy(), ref2, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    cot = torch.randn(out2.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    out2.backward(cot)
    for b in range(3):  # dL/dw_n = cot[b, bin_x(n), bin_y(n)], 0 for dropped points
        ix = np.clip(np.searchsorted(np.linspace(-1, 1, 9), x[b], side="right") - 1, 0, 7)
        iy = np.clip(np.searchsorted(np.linspace(-1, 1, 9), y[b], side="right") - 1, 0, 7)
        kept = (np.abs(x[b]) <= 1) & (np.abs(y[b]) <= 1)
        np.testing.assert_array_equal(wt.grad[b].numpy(), np.where(kept, cot[b].numpy()[ix, iy], 0))


@pytest.mark.parametrize("backend", BACKENDS)
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
    ref1 = np.stack([np.histogram(x[b, :n], 6, range=(-1, 1))[0] for b, n in enumerate(lengths)])
    ref2 = np.stack([np.histogram2d(x[b, :n], y[b, :n], 6, range=((-1, 1), (-1, 1)))[0] for b, n in enumerate(lengths)])
    w = torch.ones(4, 30, dtype=torch.float32, requires_grad=True)
    for kw in (dict(mask=mask), dict(lengths=torch.from_numpy(lengths))):
        np.testing.assert_array_equal(hard_histogram1d(xt, 6, (-1, 1), **kw).numpy(), ref1)
        with use_backend(backend):
            h2 = hard_histogram2d(xt.float(), yt.float(), 6, R2, weights=w, **kw)
        np.testing.assert_array_equal(h2.detach().numpy(), ref2)
        (grad,) = torch.autograd.grad(h2.sum(), w)
        assert (grad[torch.from_numpy(pad)] == 0).all()  # padded points: no gradient, whatever their bin


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_counts_like_float32_of_same_values(backend, dtype):
    x = torch.rand(3, 200, generator=torch.Generator().manual_seed(10)) * 2.2 - 1.1
    xl = x.to(dtype)
    out = hard_histogram1d(xl, 16, (-1, 1))
    assert out.dtype == dtype
    # edges of [-1, 1] with 16 bins are exact in every dtype, so binning the same values in float32 must agree
    torch.testing.assert_close(out.float(), hard_histogram1d(xl.float(), 16, (-1, 1)), rtol=0, atol=0)
    with use_backend(backend):
        out2 = hard_histogram2d(xl, xl.flip(-1), 16, R2)
    assert out2.dtype == dtype
    ref2 = np.stack([np.histogram2d(a, b, 16, range=R2)[0]
                     for a, b in zip(xl.double().numpy(), xl.flip(-1).double().numpy())])
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
