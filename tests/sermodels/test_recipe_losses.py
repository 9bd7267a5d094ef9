"""Recipe losses against independent references (numpy float64, torchmetrics, scipy)."""
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from sermodels.recipe_losses import ccc_loss, get_loss, log_cosh, log_cosh_loss, mae_loss, mse_loss


def _pair(seed, shape=(37, 50), dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g)).to(dtype), (scale * torch.randn(shape, generator=g)).to(dtype)


def _mp_log_cosh(x):
    """Reference log(cosh x) in 50-digit arithmetic (mpmath), rounded to float64."""
    import mpmath

    mpmath.mp.dps = 50
    return np.array([float(mpmath.log(mpmath.cosh(mpmath.mpf(float(v))))) for v in x])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_mae_match_numpy(seed, tol):
    p, t = _pair(seed)
    d = p.double().numpy() - t.double().numpy()
    torch.testing.assert_close(mse_loss(p, t).double(), torch.tensor((d ** 2).mean()), **tol[torch.float32])
    torch.testing.assert_close(mae_loss(p, t).double(), torch.tensor(np.abs(d).mean()), **tol[torch.float32])


def test_log_cosh_matches_float64_cosh_for_moderate_errors(tol):
    p, t = _pair(3, dtype=torch.float64, scale=3.0)
    ref = np.log(np.cosh(p.numpy() - t.numpy())).mean()
    torch.testing.assert_close(log_cosh_loss(p, t), torch.tensor(ref, dtype=torch.float64), **tol[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_cosh_finite_and_accurate_up_to_1e4(dtype):
    x = torch.cat([torch.logspace(-6, 4, 400, dtype=torch.float64), torch.tensor([0.0, 88.0, 89.5, 710.0, 1e4])])
    x = torch.cat([x, -x]).to(dtype)
    y = log_cosh(x)
    assert torch.isfinite(y).all()
    ref = torch.from_numpy(_mp_log_cosh(x.double().numpy()))
    rtol = 2e-6 if dtype == torch.float32 else 1e-14
    # relative accuracy everywhere, including tiny |x| where log cosh ~ x^2 / 2
    torch.testing.assert_close(y.double(), ref, rtol=rtol, atol=1e-30 if dtype == torch.float64 else 1e-12)
    # naive float32 log(cosh(x)) overflows beyond ~89: the stable form must not
    assert not torch.isfinite(torch.log(torch.cosh(torch.tensor([1e4], dtype=torch.float32)))).all()


def test_log_cosh_gradient_is_tanh_and_gradcheck():
    x = torch.linspace(-50, 50, 101, dtype=torch.float64).requires_grad_()
    log_cosh(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tanh(x.detach()), atol=1e-12, rtol=1e-12)
    p, t = _pair(4, shape=(6, 5), dtype=torch.float64, scale=5.0)
    assert torch.autograd.gradcheck(log_cosh_loss, (p.requires_grad_(), t))


@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_loss_is_mean_of_one_minus_ccc_per_column(unbiased):
    p, t = _pair(5, shape=(64, 3), dtype=torch.float64)
    t = 0.6 * p + 0.3 * t + 0.2  # correlated, biased
    ddof = 1 if unbiased else 0
    ref = []
    for d in range(3):
        x, y = p[:, d].numpy(), t[:, d].numpy()
        r = pearsonr(x, y)[0]
        sx, sy = x.std(ddof=ddof), y.std(ddof=ddof)
        ref.append(1 - 2 * r * sx * sy / (sx ** 2 + sy ** 2 + (x.mean() - y.mean()) ** 2))
    torch.testing.assert_close(ccc_loss(p, t, unbiased=unbiased), torch.tensor(np.mean(ref), dtype=torch.float64),
                               atol=1e-12, rtol=1e-10)


def test_ccc_loss_matches_torchmetrics_unbiased():
    from torchmetrics.functional import concordance_corrcoef

    p, t = _pair(6, shape=(40, 3))
    ref = (1 - concordance_corrcoef(p, t)).mean()
    torch.testing.assert_close(ccc_loss(p, t, unbiased=True), ref, atol=1e-5, rtol=1e-4)


def test_bad_inputs_name_the_argument():
    p, t = _pair(7, shape=(4, 3))
    with pytest.raises(ValueError, match="shape"):
        mse_loss(p, t[:, :2])
    with pytest.raises(TypeError, match="pred"):
        log_cosh_loss(p.long(), t)
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("huber")
