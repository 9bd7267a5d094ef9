"""The compiled CPU kernels (torch.ops.kdekit.*) against independent oracles: numpy, scipy, kde_diffusion and the
float64 torch reference ops; fp64 gradcheck of every differentiable op; thread-count independence."""
import math
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import torch

from kdekit import _ext
from kdekit._backend import use_backend
from kdekit.ops.soft_histogram import soft_histogram2d

pytestmark = pytest.mark.skipif(not _ext.LOADED, reason=f"kdekit._C not built: {_ext.LOAD_ERROR}")
ops = torch.ops.kdekit
EPS4 = 4 * float(np.finfo(float).eps)  # a Python float (a numpy scalar becomes a tensor under dynamo)


def _ranges(B, lo=-1.0, hi=1.0):
    return torch.tensor([[lo, hi]], dtype=torch.float64).expand(B, 2).contiguous()


def _points(B, N, dtype=torch.float64, seed=0, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(B, 1, 2, generator=g, dtype=torch.float64) - 0.5
    pts = (centre + scale * torch.randn(B, N, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return pts[..., 0].to(dtype).contiguous(), pts[..., 1].to(dtype).contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins", [2, 24, 70])  # padding of the bins axis to the vector width, one and several blocks
def test_soft_histogram_matches_torch_reference(dtype, bins, tol):
    x, y = _points(3, 37, dtype)
    w = torch.rand(3, 37, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    r = _ranges(3)
    out = ops.soft_histogram2d(x, y, w, r, r, bins, 8.0)
    with use_backend("torch"):
        ref = soft_histogram2d(x.double(), y.double(), bins, ((-1, 1), (-1, 1)), 8.0, weights=w.double())
    torch.testing.assert_close(out.double(), ref, **tol[dtype])


def test_soft_histogram_gradcheck():
    x, y = _points(2, 9)
    w = torch.rand(2, 9, dtype=torch.float64) + 0.5
    r = _ranges(2)
    args = [t.requires_grad_() for t in (x, y, w)]
    assert torch.autograd.gradcheck(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, 7, 5.0), args)


def test_hard_histogram_matches_numpy_including_edges_and_dropped_points():
    g = np.random.default_rng(2)
    x = g.uniform(-1.2, 1.2, (4, 50))
    y = g.uniform(-1.2, 1.2, (4, 50))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    y[:, :5] = np.array([-1, -0.5, 0, 0.5, 1.0])
    x[0, 7] = np.nan
    w = g.random((4, 50))
    r = _ranges(4)
    out = ops.hard_histogram2d(torch.tensor(x), torch.tensor(y), torch.tensor(w), r, r, 16)
    for b in range(4):
        ref = np.histogram2d(x[b], y[b], bins=16, range=((-1, 1), (-1, 1)), weights=w[b])[0]
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=1e-12)


def test_hard_histogram_weight_gradient_is_bin_gather():
    x, y = _points(2, 20)
    w = torch.rand(2, 20, dtype=torch.float64, requires_grad=True)
    r = _ranges(2)
    assert torch.autograd.gradcheck(lambda c: ops.hard_histogram2d(x, y, c, r, r, 8), [w])


def _kde_inputs(B, N, seed):
    x, y = _points(B, N, seed=seed, scale=0.25)
    return x, y, torch.ones_like(x), _ranges(B), torch.full((B,), float(N), dtype=torch.float64)


@pytest.mark.parametrize("grid,pool", [(64, 0), (128, 4), (256, 2)])
def test_kde2d_points_matches_kde_diffusion(grid, pool):
    kde_diffusion = pytest.importorskip("kde_diffusion")
    x, y, w, r, count = _kde_inputs(4, 60, seed=grid)
    dens, times, status = ops.kde2d_points(x, y, w, r, r, count, grid, pool, -math.inf, 0.1, 2e-12, EPS4, 100)
    for b in range(4):
        try:
            ref, _, bw = kde_diffusion.kde2d(x[b].numpy(), y[b].numpy(), n=grid, limits=1.0)
        except ValueError:
            assert status[b] != 0
            assert torch.isnan(dens[b]).all()
            continue
        assert status[b] == 0
        if pool:
            blocks = ref.reshape(pool, grid // pool, pool, grid // pool).sum((1, 3))
            ref = blocks / blocks.sum()
        np.testing.assert_allclose(dens[b].numpy(), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
        np.testing.assert_allclose(np.sqrt([times[b, 2], times[b, 1]]) * 2.0, bw, rtol=1e-9)


def test_kde2d_points_refuses_an_odd_grid():
    x, y, w, r, count = _kde_inputs(2, 30, seed=1)
    with pytest.raises(RuntimeError, match="grid must be even"):
        ops.kde2d_points(x, y, w, r, r, count, 5, 0, -math.inf, 0.1, 2e-12, EPS4, 100)


def test_kde2d_status_flags_unsolvable_items_only():
    kde_diffusion = pytest.importorskip("kde_diffusion")
    g = torch.Generator().manual_seed(5)
    x, y, w, r, count = _kde_inputs(6, 40, seed=3)
    x[3], y[3] = torch.rand(40, generator=g, dtype=torch.float64) * 2 - 1, torch.rand(40, generator=g, dtype=torch.float64) * 2 - 1
    x[4], y[4] = torch.full((40,), 2.0, dtype=torch.float64), torch.full((40,), 2.0, dtype=torch.float64)  # all outside
    dens, times, status = ops.kde2d_points(x, y, w, r, r, count, 64, 0, -math.inf, 0.1, 2e-12, EPS4, 100)
    for b in range(6):
        try:
            kde_diffusion.kde2d(x[b].numpy(), y[b].numpy(), n=64, limits=1.0)
            assert status[b] == 0
        except ValueError:
            assert status[b] in (1, 3)
    assert status[4] == 3
    assert torch.isfinite(dens[status == 0]).all() and torch.isnan(dens[status != 0]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kde2d_solve_matches_points_path(dtype):
    from kdekit.ops.dct import dct2

    x, y, w, r, count = _kde_inputs(3, 80, seed=7)
    hist = torch.stack([torch.tensor(np.histogram2d(x[b].numpy(), y[b].numpy(), 64, ((-1, 1), (-1, 1)))[0])
                        for b in range(3)])
    a = dct2(hist / 80)
    a[:, 0, :] /= 2
    a[:, :, 0] /= 2
    times, status = ops.kde2d_solve(a.to(dtype), count, 0.1, 2e-12, EPS4, 100)
    _, ref_times, ref_status = ops.kde2d_points(x, y, w, r, r, count, 64, 4, -math.inf, 0.1, 2e-12, EPS4, 100)
    assert torch.equal(status, ref_status)
    torch.testing.assert_close(times, ref_times, rtol=1e-9 if dtype == torch.float64 else 1e-5, atol=0)


@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_matches_numpy_and_gradcheck(unbiased):
    g = np.random.default_rng(3)
    x, y = g.normal(size=(5, 30)), g.normal(size=(5, 30))
    y += 0.5 * x
    out = ops.ccc(torch.tensor(x), torch.tensor(y), unbiased).numpy()
    d = 1 if unbiased else 0
    cov = ((x - x.mean(1, keepdims=True)) * (y - y.mean(1, keepdims=True))).sum(1) / (30 - d)
    ref = 2 * cov / (x.var(1, ddof=d) + y.var(1, ddof=d) + (x.mean(1) - y.mean(1)) ** 2)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    args = [torch.tensor(x[:2, :6]).requires_grad_(), torch.tensor(y[:2, :6]).requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b: ops.ccc(a, b, unbiased), args)


def test_divergences_match_scipy_and_gradcheck():
    g = np.random.default_rng(4)
    p, q = g.random((4, 16)), g.random((4, 16))
    p[0, :3] = 0  # exact zeros
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    kl = ops.divergence(torch.tensor(p), torch.tensor(q), "kl").numpy()
    jsd = ops.divergence(torch.tensor(p), torch.tensor(q), "jsd").numpy()
    np.testing.assert_allclose(kl, scipy.special.rel_entr(p, q).sum(1), rtol=1e-12)
    np.testing.assert_allclose(jsd, scipy.spatial.distance.jensenshannon(p, q, axis=1) ** 2, rtol=1e-9)
    pp, qq = torch.tensor(p[1:, :5] + 0.1).requires_grad_(), torch.tensor(q[1:, :5] + 0.1).requires_grad_()
    for kind in ("kl", "jsd"):
        assert torch.autograd.gradcheck(lambda a, b: ops.divergence(a, b, kind), [pp, qq])
    with pytest.raises(RuntimeError, match="kind must be"):
        ops.divergence(torch.tensor(p), torch.tensor(q), "tv")


def test_results_do_not_depend_on_thread_count():
    """Bitwise equal with 1 and 2 threads; 48 soft-histogram items of 200 points and 64 bins are split across threads
    (item_grain: ~2^26 flops per chunk)."""
    x, y, w, r, count = _kde_inputs(8, 50, seed=11)
    xs, ys = _points(48, 200, torch.float32, seed=12)
    ws = torch.rand(48, 200, generator=torch.Generator().manual_seed(13))
    grad = torch.randn(48, 64, 64, generator=torch.Generator().manual_seed(14))
    rs = _ranges(48)
    threads = torch.get_num_threads()
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            outs.append((ops.soft_histogram2d(xs, ys, ws, rs, rs, 64, 8.0),
                         *ops.soft_histogram2d_backward(grad, xs, ys, ws, rs, rs, 64, 8.0),
                         ops.kde2d_points(x, y, w, r, r, count, 64, 4, -math.inf, 0.1, 2e-12, EPS4, 100)[0]))
        finally:
            torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_bad_arguments_raise_clear_errors():
    x, y, w, r, count = _kde_inputs(2, 10, seed=1)
    with pytest.raises(RuntimeError, match="range_x must be float64"):
        ops.soft_histogram2d(x, y, w, r.float(), r, 8, 8.0)
    with pytest.raises(RuntimeError, match=r"y must have shape \(2, 10\)"):
        ops.hard_histogram2d(x, y[:, :5], w, r, r, 8)
    with pytest.raises(RuntimeError, match="pool must be 0"):
        ops.kde2d_points(x, y, w, r, r, count, 64, 3, -math.inf, 0.1, 2e-12, EPS4, 100)
