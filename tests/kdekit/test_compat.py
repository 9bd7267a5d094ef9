"""kdekit.compat.kde1d/kde2d: kde_diffusion's signature and results (KDE-diffusion 1.0.5 called for comparison,
tests/reference.py), but a warning instead of an error, under the torch and cpp backends."""
import warnings

import numpy as np
import pytest
import torch

import kdekit
from kdekit.compat import kde1d, kde2d
from tests import reference

kde_diffusion = reference.kde_diffusion()
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
    with pytest.raises(ValueError, match="x is empty"):
        kde2d([], [])
    with pytest.raises(ValueError, match="x is empty"):
        kde1d(np.array([]))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="y holds 1 NaN or infinite"):
            kde2d([0.1, 0.2, 0.3], [0.0, bad, 0.2])
        with pytest.raises(ValueError, match="x holds 1 NaN or infinite"):
            kde1d([0.1, bad], limits=(-1, 1))
    with pytest.raises(ValueError, match="n must be a finite number >= 2"):
        kde2d([0.1, 0.2], [0.1, 0.3], n=1)


@pytest.mark.parametrize("call", ["kde2d", "kde1d"])
def test_bad_input_raises_where_kde_diffusion_raises(call):
    """Drop-in: the same inputs that make kde_diffusion raise ValueError make kdekit raise ValueError."""
    ours, theirs = getattr(kdekit, call), getattr(kde_diffusion, call)
    args = {"kde2d": ([0.1, np.nan, 0.3, -0.2], [0.0, 0.1, 0.2, 0.3]), "kde1d": ([0.1, np.nan, 0.3],)}[call]
    for case in (args, tuple(np.array([]) for _ in args)):
        for fn in (theirs, ours):
            with pytest.raises(ValueError):
                fn(*(np.asarray(a) for a in case), n=64)


def test_float_grid_size_rounds_up_like_kde_diffusion():
    x, y = cluster(50, 3)
    for n in (64.7, 100.0, 128):
        ref = kde_diffusion.kde2d(x, y, n=n, limits=((-1, 1), (-1, 1)))[0]
        got = kde2d(x, y, n=n, limits=((-1, 1), (-1, 1)))[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    assert kde1d(x, n=300.5)[0].shape == kde_diffusion.kde1d(x, n=300.5)[0].shape == (512,)


def test_strict_raises_like_kde_diffusion_on_non_convergence():
    x, y = [0.1, -0.3], [0.2, 0.5]  # two points: no root on [0, 0.1]
    with pytest.raises(ValueError, match="did not converge") as theirs:
        kde_diffusion.kde2d(np.array(x), np.array(y), n=64, limits=((-1, 1), (-1, 1)))
    with pytest.raises(ValueError) as ours:
        kde2d(x, y, n=64, limits=((-1, 1), (-1, 1)), strict=True)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="did not converge"):
        kde1d([0.3], n=64, strict=True)
    x, y = cluster(60, 4)  # converges: strict changes nothing
    np.testing.assert_array_equal(kde2d(x, y, n=64, strict=True)[0], kde2d(x, y, n=64)[0])


def test_torch_input_with_grad_keeps_its_graph_and_says_the_points_get_none():
    x, y = (torch.tensor(v, requires_grad=True) for v in cluster(40, 5))
    with pytest.warns(UserWarning, match="no gradient in the point positions"):
        density, (xg, yg), bw = kde2d(x, y, n=64)
    assert density.requires_grad and xg.requires_grad and bw.requires_grad
    gx, gy = torch.autograd.grad((density * xg[:, None]).sum() + bw.sum(), (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    assert (gx != 0).sum() == 2  # the default limits depend on the smallest and the largest point only
    ref = kde2d(x.detach().numpy(), y.detach().numpy(), n=64)[0]
    np.testing.assert_allclose(density.detach().numpy(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    with pytest.warns(UserWarning, match="no gradient in the point positions"):
        d1, grid, _ = kde1d(x, n=128)
    assert d1.requires_grad and grid.requires_grad


def test_overflowing_density_warns_like_kde_diffusion():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-0.8, 0.8, (2, 20)) * 1e-300
    with pytest.warns(RuntimeWarning, match="overflows"):
        density = kde2d(a, b, n=64)[0]
    assert not np.isfinite(density).all()
