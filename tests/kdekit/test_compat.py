"""kdekit.compat.kde1d/kde2d: kde_diffusion's signature and results, but a warning instead of an error."""
import warnings

import numpy as np
import pytest
import torch

import kde_diffusion
import kdekit
from kdekit.compat import kde1d, kde2d


pytestmark = pytest.mark.usefixtures("one_thread")


def cluster(n, seed):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.1, 0.2, n), -1, 1), np.clip(rng.normal(-0.2, 0.15, n), -1, 1)


@pytest.mark.parametrize("limits", [None, ((-1, 1), (-1, 1)), 1.5, ((-1, 1), None), ((None, 1), 2.0)])
def test_kde2d_numpy_matches_kde_diffusion(limits, backend):
    x, y = cluster(60, 0)
    density, (xg, yg), bw = kde2d(x, y, n=100, limits=limits)
    ref_density, (rxg, ryg), rbw = kde_diffusion.kde2d(x, y, n=100, limits=limits)
    assert isinstance(density, np.ndarray) and density.dtype == np.float64 and density.shape == (128, 128)
    np.testing.assert_allclose(density, ref_density, rtol=1e-9, atol=1e-9 * np.abs(ref_density).max())
    np.testing.assert_allclose(xg, rxg, rtol=1e-14)
    np.testing.assert_allclose(yg, ryg, rtol=1e-14)
    np.testing.assert_allclose(bw, rbw, rtol=1e-9)


@pytest.mark.parametrize("limits", [None, (-1, 1), 2.0, (None, 1)])
def test_kde1d_numpy_matches_kde_diffusion(limits):
    x, _ = cluster(300, 1)
    density, grid, bw = kde1d(list(x), n=1000, limits=limits)
    ref_density, ref_grid, ref_bw = kde_diffusion.kde1d(list(x), n=1000, limits=limits)
    assert isinstance(density, np.ndarray) and density.shape == (1024,)
    np.testing.assert_allclose(density, ref_density, rtol=1e-9, atol=1e-9 * np.abs(ref_density).max())
    np.testing.assert_allclose(grid, ref_grid, rtol=1e-14)
    assert isinstance(bw, float) and bw == pytest.approx(ref_bw, rel=1e-9)


def test_torch_in_torch_out(backend):
    x, y = cluster(40, 2)
    density, (xg, yg), bw = kde2d(torch.tensor(x), torch.tensor(y), n=64)
    assert isinstance(density, torch.Tensor) and density.dtype == torch.float64
    assert isinstance(xg, torch.Tensor) and bw.shape == (2,)
    ref = kde_diffusion.kde2d(x, y, n=64)[0]
    np.testing.assert_allclose(density.numpy(), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    d1, g1, b1 = kde1d(torch.tensor(x, dtype=torch.float32), n=256)
    assert d1.dtype == torch.float32 and g1.dtype == torch.float32


def test_hard_data_warns_once_instead_of_raising(backend):
    rng = np.random.default_rng(5)
    for _ in range(50):  # find a uniform set where kde_diffusion raises
        x, y = rng.uniform(-1, 1, (2, 8))
        try:
            kde_diffusion.kde2d(x, y, n=64, limits=((-1, 1), (-1, 1)))
        except ValueError:
            break
    else:
        pytest.fail("no failing set found")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        density, (xg, yg), bw = kde2d(x, y, n=64, limits=((-1, 1), (-1, 1)))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and ("SMALLEST_ROOT" in messages[0] or "MIN_ABS_F" in messages[0])
    assert np.isfinite(density).all() and np.isfinite(bw).all()
    assert density.sum() * (xg[1] - xg[0]) * (yg[1] - yg[0]) == pytest.approx(1, abs=1e-12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kde1d([0.3], n=64)  # one point: kde_diffusion fails
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="x and y must have the same length"):
        kde2d([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="x must be one-dimensional"):
        kde1d(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        kde1d(["a", "b"])
