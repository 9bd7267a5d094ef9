"""dct / idct / dct2 / idct2 against scipy.fft (type 2, norm=None; tests/reference.py): sizes of both forms (matmul
and FFT), any dim, every dtype, values and gradients (gradcheck and the transposed transform), bad input, and on the
device (gpu). The DCT has one backend (torch)."""
import numpy as np
import pytest
import torch

from kdekit.ops import dct as dct_mod
from kdekit.ops.dct import dct, dct2, idct, idct2
from tests import reference
from tests.kdekit.helpers import DEVICE, device_close, device_test, dtypes


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 97, 512, 513, 1024])
def test_dct_1d_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, 2, n))
    for dim in (-1, 1):
        xt = torch.from_numpy(x).movedim(-1, dim) if dim != -1 else torch.from_numpy(x)
        ref = reference.dct(xt, axis=dim)
        np.testing.assert_allclose(dct(xt, dim=dim).numpy(), ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
        ref_i = reference.idct(xt, axis=dim)
        np.testing.assert_allclose(idct(xt, dim=dim).numpy(), ref_i, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 8, 8), (4, 5, 6), (1, 64, 64), (2, 3, 600, 4)])
def test_dct2_matches_scipy_dctn(shape):
    x = np.random.default_rng(0).random(shape)
    xt = torch.from_numpy(x)
    ref = reference.dctn(x)
    np.testing.assert_allclose(dct2(xt).numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(idct2(xt).numpy(), reference.idctn(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(idct2(dct2(xt)).numpy(), x, rtol=0, atol=1e-12)


def test_fft_and_matmul_forms_agree():
    x = torch.randn(3, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mm = x @ dct_mod._cos_table(96, x.dtype, x.device, False)
    torch.testing.assert_close(dct_mod._dct_last_fft(x), mm, rtol=0, atol=1e-12)
    mm_i = x @ dct_mod._cos_table(96, x.dtype, x.device, True)
    torch.testing.assert_close(dct_mod._idct_last_fft(x), mm_i, rtol=0, atol=1e-12)
    for odd in (7, 15):
        y = torch.randn(2, odd, dtype=torch.float64)
        torch.testing.assert_close(dct_mod._idct_last_fft(y), y @ dct_mod._cos_table(odd, y.dtype, y.device, True))


@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float16, torch.bfloat16]))
def test_low_precision_returns_input_dtype(dtype, tol):
    x64 = torch.rand(4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = dct2(x64.to(dtype))
    assert out.dtype == dtype
    ref = dct2(x64.to(dtype).to(torch.float64))
    scale = ref.abs().max()
    torch.testing.assert_close(out.to(torch.float64) / scale, ref / scale, atol=tol[dtype]["atol"] * 4, rtol=0)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 5, 6, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(dct2, (x,))
    assert torch.autograd.gradcheck(idct2, (x,))
    y = torch.rand(2, 7, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(dct_mod._dct_last_fft, (y,))
    assert torch.autograd.gradcheck(dct_mod._idct_last_fft, (y,))


@pytest.mark.parametrize("dtype", dtypes())
@pytest.mark.parametrize("n", [16, 600])  # the matmul and the FFT form
def test_gradient_is_the_transposed_transform(dtype, n, tol):
    """d sum(dct(x) * g) / dx = DCT-II^T g (scipy's DCT-III of g plus g_0), at the input's dtype; dct2 likewise along
    both dims."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    cot = torch.randn(3, n, generator=g, dtype=torch.float64).to(dtype)
    (grad,) = torch.autograd.grad((dct(x) * cot).sum(), x)
    assert grad.dtype == dtype
    ref = torch.from_numpy(reference.dct_vjp(cot, axis=-1))
    scale = ref.abs().max()
    torch.testing.assert_close(grad.double() / scale, ref / scale, atol=tol[dtype]["atol"] * 4, rtol=0)
    x2 = torch.randn(2, 8, 12, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    cot2 = torch.randn(2, 8, 12, generator=g, dtype=torch.float64).to(dtype)
    (grad2,) = torch.autograd.grad((dct2(x2) * cot2).sum(), x2)
    ref2 = torch.from_numpy(reference.dct_vjp(reference.dct_vjp(cot2, axis=-1), axis=-2))
    scale2 = ref2.abs().max()
    torch.testing.assert_close(grad2.double() / scale2, ref2 / scale2, atol=tol[dtype]["atol"] * 4, rtol=0)


def test_bad_input():
    with pytest.raises(TypeError, match="x must"):
        dct(torch.arange(4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        dct(np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        dct(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="at least 2 dims"):
        dct2(torch.zeros(4))


@device_test
@pytest.mark.parametrize("n", [8, 64, 1024])  # 1024: the FFT form
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
def test_dct_on_device_matches_scipy(n, dtype):
    x = torch.randn(3, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    xd = x.to(dtype).to(DEVICE)
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    for ours, theirs in ((dct, reference.dct), (idct, reference.idct)):
        ref = torch.from_numpy(theirs(x.to(dtype).double(), axis=-1))
        device_close(ours(xd), ref, dict(rtol=0, atol=rtol), ours.__name__)
    for ours, theirs in ((dct2, reference.dctn), (idct2, reference.idctn)):
        ref = torch.from_numpy(theirs(x.to(dtype).double(), axes=(-2, -1)))
        device_close(ours(xd), ref, dict(rtol=0, atol=rtol), ours.__name__)
