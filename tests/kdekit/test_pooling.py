import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdekit.ops.pooling import pool_density, pool_density1d


def ref_pool2d(d, k):
    """numpy reference: explicit block loops over ``linspace(0, n, k + 1)`` edges, divided by the item total."""
    *lead, n, m = d.shape
    flat = d.reshape(-1, n, m)
    out = np.zeros((flat.shape[0], k, k))
    re, ce = np.linspace(0, n, k + 1).astype(int), np.linspace(0, m, k + 1).astype(int)
    for b in range(flat.shape[0]):
        for i in range(k):
            for j in range(k):
                out[b, i, j] = flat[b, re[i]:re[i + 1], ce[j]:ce[j + 1]].sum()
        out[b] /= out[b].sum()
    return out.reshape(*lead, k, k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,k", [((3, 64, 64), 4), ((2, 2, 8, 12), 2), ((16, 16), 16), ((5, 6, 6), 1)])
def test_matches_numpy_reference(dtype, shape, k, tol):
    d = np.random.default_rng(sum(shape)).random(shape) + 0.01
    dt = torch.from_numpy(d).to(dtype)
    out = pool_density(dt, k)
    assert out.dtype == dtype and out.shape == (*shape[:-2], k, k)
    ref = ref_pool2d(dt.double().numpy(), k)
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=tol[dtype]["rtol"], atol=tol[dtype]["atol"])


def test_1d_matches_numpy_reference():
    d = np.random.default_rng(1).random((3, 2, 24))
    out = pool_density1d(torch.from_numpy(d), 6)
    ref = d.reshape(3, 2, 6, 4).sum(-1)
    np.testing.assert_allclose(out.numpy(), ref / ref.sum(-1, keepdims=True), rtol=0, atol=1e-15)


def test_negative_values_and_zero_total():
    d = torch.tensor([[[1.0, -0.5], [2.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    out = pool_density(d, 2)
    torch.testing.assert_close(out[0], d[0] / 3.0)
    assert (out[1] == 0).all()


def test_gradcheck():
    d = (torch.rand(2, 8, 6, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pool_density(t, 2), (d,))
    e = (torch.rand(3, 12, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pool_density1d(t, 3), (e,))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="must divide the grid size 10"):
        pool_density(torch.rand(2, 10, 10), 4)
    with pytest.raises(ValueError, match="must divide the grid size 6"):
        pool_density(torch.rand(2, 8, 6), 4)
    with pytest.raises(ValueError, match="must divide"):
        pool_density1d(torch.rand(7), 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pool_density(torch.rand(4, 4), 0)
    with pytest.raises(TypeError, match="k must be an int"):
        pool_density(torch.rand(4, 4), 2.0)
    with pytest.raises(ValueError, match="at least 2 dims"):
        pool_density(torch.rand(4), 2)
    with pytest.raises(TypeError, match="floating dtype"):
        pool_density(torch.ones(4, 4, dtype=torch.int64), 2)


@given(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 3), st.integers(0, 10_000))
def test_property_sums_to_one_and_batching_is_transparent(b, k, m, seed):
    n = k * m
    d = torch.rand(b, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1e-3
    out = pool_density(d, k)
    torch.testing.assert_close(out.sum((-2, -1)), torch.ones(b, dtype=torch.float64), rtol=0, atol=1e-14)
    for i in range(b):
        torch.testing.assert_close(out[i], pool_density(d[i], k), rtol=0, atol=0)
