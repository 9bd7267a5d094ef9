"""pool_density / pool_density1d against numpy block loops (tests/reference.py) for every dtype, values and gradients
(gradcheck and the analytic gradient), negative values and zero totals, bad arguments, a property test, and on the
device (gpu). Pooling has one backend (torch)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdekit.ops.pooling import pool_density, pool_density1d
from tests import reference
from tests.kdekit.helpers import compare_on_device, device_test, dtypes


@pytest.mark.parametrize("dtype", dtypes())
@pytest.mark.parametrize("shape,k", [((3, 64, 64), 4), ((2, 2, 8, 12), 2), ((16, 16), 16), ((5, 6, 6), 1)])
def test_matches_numpy_reference(dtype, shape, k, tol):
    d = np.random.default_rng(sum(shape)).random(shape) + 0.01
    dt = torch.from_numpy(d).to(dtype)
    out = pool_density(dt, k)
    assert out.dtype == dtype and out.shape == (*shape[:-2], k, k)
    ref = reference.pool2d(dt.double(), k)
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=tol[dtype]["rtol"], atol=tol[dtype]["atol"])


def test_1d_matches_numpy_reference():
    d = np.random.default_rng(1).random((3, 2, 24))
    out = pool_density1d(torch.from_numpy(d), 6)
    np.testing.assert_allclose(out.numpy(), reference.pool1d(d, 6), rtol=0, atol=1e-15)


def test_negative_values_and_zero_total():
    d = torch.tensor([[[1.0, -0.5], [2.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    out = pool_density(d, 2)
    torch.testing.assert_close(out[0], d[0] / 3.0)
    assert (out[1] == 0).all()


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    d = (torch.rand(2, 8, 6, dtype=torch.float64, generator=g) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pool_density(t, 2), (d,))
    e = (torch.rand(3, 12, dtype=torch.float64, generator=g) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pool_density1d(t, 3), (e,))


@pytest.mark.parametrize("dtype", dtypes())
def test_gradient_matches_analytic_reference(dtype, tol):
    """d sum(pool(d) * g) / d_cell = (g_block - sum g P) / total, at the input's dtype."""
    gen = torch.Generator().manual_seed(3)
    d = (torch.rand(3, 16, 16, generator=gen, dtype=torch.float64) + 0.01).to(dtype).requires_grad_()
    cot = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64).to(dtype)
    (grad,) = torch.autograd.grad((pool_density(d, 4) * cot).sum(), d)
    assert grad.dtype == dtype
    ref = torch.from_numpy(reference.pool2d_vjp(d.detach().double(), 4, cot.double()))
    scale = ref.abs().max()
    torch.testing.assert_close(grad.double() / scale, ref / scale, atol=tol[dtype]["atol"], rtol=tol[dtype]["rtol"])


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


@device_test
@pytest.mark.parametrize("dtype", dtypes())
def test_pool_density_on_device(dtype, tol):
    d = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    compare_on_device(lambda d: pool_density(d, 4), [d], dtype, "auto", tol[dtype])
