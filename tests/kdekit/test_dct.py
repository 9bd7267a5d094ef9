import numpy as np
import pytest
import scipy.fft as sf
import torch

from kdekit.ops import dct as dct_mod
from kdekit.ops.dct import dct, dct2, idct, idct2


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 97, 512, 513, 1024])
def test_dct_1d_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, 2, n))
    for dim in (-1, 1):
        xt = torch.from_numpy(x).movedim(-1, dim) if dim != -1 else torch.from_numpy(x)
        ref = sf.dct(xt.numpy(), type=2, norm=None, axis=dim)
        np.testing.assert_allclose(dct(xt, dim=dim).numpy(), ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
        ref_i = sf.idct(xt.numpy(), type=2, norm=None, axis=dim)
        np.testing.assert_allclose(idct(xt, dim=dim).numpy(), ref_i, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 8, 8), (4, 5, 6), (1, 64, 64), (2, 3, 600, 4)])
def test_dct2_matches_scipy_dctn(shape):
    x = np.random.default_rng(0).random(shape)
    xt = torch.from_numpy(x)
    ref = sf.dctn(x, type=2, norm=None, axes=(-2, -1))
    np.testing.assert_allclose(dct2(xt).numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(idct2(xt).numpy(), sf.idctn(x, type=2, norm=None, axes=(-2, -1)), rtol=0, atol=1e-12)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_returns_input_dtype(dtype, tol):
    x64 = torch.rand(4, 16, 16, dtype=torch.float64)
    out = dct2(x64.to(dtype))
    assert out.dtype == dtype
    ref = dct2(x64.to(dtype).to(torch.float64))
    scale = ref.abs().max()
    torch.testing.assert_close(out.to(torch.float64) / scale, ref / scale, atol=tol[dtype]["atol"] * 4, rtol=0)


def test_gradcheck():
    x = torch.rand(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct2, (x,))
    assert torch.autograd.gradcheck(idct2, (x,))
    y = torch.rand(2, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct_mod._dct_last_fft, (y,))
    assert torch.autograd.gradcheck(dct_mod._idct_last_fft, (y,))


def test_bad_input():
    with pytest.raises(TypeError, match="x must"):
        dct(torch.arange(4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        dct(np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        dct(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="at least 2 dims"):
        dct2(torch.zeros(4))
