"""diffusion_kde1d/2d against kde_diffusion 1.0.5 (live), gradients, dtypes, batching and degenerate items."""
import math
import warnings
import zlib

import numpy as np
import pytest
import torch

import kde_diffusion
import kdekit
from kdekit.labels import pseudo_observations
from kdekit.ops.diffusion_kde import (
    KDEStatus,
    brentq_batched,
    diffusion_kde1d,
    diffusion_kde1d_binned,
    diffusion_kde2d,
    diffusion_kde2d_binned,
)
from kdekit.ops.pooling import pool_density

UNIT = ((-1.0, 1.0), (-1.0, 1.0))
FALLBACK = {KDEStatus.SMALLEST_ROOT, KDEStatus.MIN_ABS_F, KDEStatus.SINGLE_LOCATION}


HAS_CPP = kdekit.backends()["cpp"][0]
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ point families


def family(name: str, count: int, seed: int):
    """``count`` point sets (list of (x, y) float64 arrays) of one family; N varies over 5, 8, 20, 50."""
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(count):
        n = (5, 8, 20, 50)[i % 4]
        if name == "uniform":
            xy = rng.uniform(-1, 1, (2, n))
        elif name == "cluster":
            centre = rng.uniform(-0.6, 0.6, (2, 1))
            xy = np.clip(rng.normal(centre, rng.uniform(0.05, 0.3), (2, n)), -1, 1)
        elif name == "likert":
            xy = rng.choice([-1, -0.5, 0, 0.5, 1], size=(2, n), p=[0.1, 0.2, 0.4, 0.2, 0.1])
        elif name == "seedobs":
            annot = (8, 20)[i % 2]
            ratings = rng.choice([-1, -0.5, 0, 0.5, 1], size=(1, annot, 2), p=[0.1, 0.2, 0.4, 0.2, 0.1])
            gen = torch.Generator().manual_seed(seed * 1000 + i)
            obs = pseudo_observations(torch.tensor(ratings), 200, gen)[0].numpy()
            xy = obs.T
        sets.append((np.ascontiguousarray(xy[0]), np.ascontiguousarray(xy[1])))
    return sets


def padded(sets):
    """(B, Nmax) float64 x, y and lengths from a list of sets."""
    nmax = max(len(x) for x, _ in sets)
    X = torch.zeros(len(sets), nmax, dtype=torch.float64)
    Y = torch.zeros(len(sets), nmax, dtype=torch.float64)
    L = torch.tensor([len(x) for x, _ in sets])
    for b, (x, y) in enumerate(sets):
        X[b, : len(x)] = torch.from_numpy(x)
        Y[b, : len(y)] = torch.from_numpy(y)
    return X, Y, L


def reference2d(x, y, n, limits):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return kde_diffusion.kde2d(x, y, n=n, limits=limits)
    except ValueError:
        return None


def reference1d(x, n, limits):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return kde_diffusion.kde1d(x, n=n, limits=limits)
    except ValueError:
        return None


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300))


# ------------------------------------------------------------------------------------------------ live comparison

def sign_changes_2d(sets, n, limits_per_set):
    """Number of sign changes of kde_diffusion's f on a 100-point log grid over (1e-6, 0.1] per set."""
    from kdekit.ops.dct import dct2
    from kdekit.ops.diffusion_kde.fixed_point import Psi2d
    from kdekit.ops.hard_histogram import hard_histogram2d

    X, Y, L = padded(sets)
    lim = torch.tensor([[[lo, hi] for lo, hi in lims] for lims in limits_per_set], dtype=torch.float64)
    mask = torch.arange(X.shape[1])[None, :] < L[:, None]
    a = dct2(hard_histogram2d(X, Y, n, lim, mask=mask) / L[:, None, None].double())
    a[:, 0, :] /= 2
    a[:, :, 0] /= 2
    grid = torch.logspace(-6, -1, 100, dtype=torch.float64)
    f = Psi2d(a**2, L.double()).f(grid.expand(len(sets), -1), torch.arange(len(sets)))
    return (torch.signbit(f[:, 1:]) != torch.signbit(f[:, :-1])).sum(1)


# (family, grid, sets): limits alternate per set between ((-1, 1), (-1, 1)) and kde_diffusion's default
CASES_2D = [(fam, 64, 200) for fam in ("uniform", "cluster", "likert", "seedobs")]
CASES_2D += [(fam, 512, 200) for fam in ("uniform", "cluster", "likert", "seedobs")]


@pytest.mark.parametrize("fam,n,count", CASES_2D)
def test_kde2d_matches_kde_diffusion(fam, n, count):
    """Where kde_diffusion converges: same density/bandwidth/grid; where it raises: a normalised fallback result.

    Every backend is checked against the same references, and against the torch path (status, fields to 1e-12).
    """
    sets = family(fam, count, seed=zlib.crc32(f"{fam}-{n}".encode()))
    X, Y, L = padded(sets)
    lims = [UNIT if b % 2 == 0 else None for b in range(count)]
    results = {}
    for backend in ("torch", "cpp") if HAS_CPP else ("torch",):
        with kdekit.use_backend(backend):
            unit = diffusion_kde2d(X[0::2], Y[0::2], grid_size=n, limits=UNIT, lengths=L[0::2])
            auto = diffusion_kde2d(X[1::2], Y[1::2], grid_size=n, limits=None, lengths=L[1::2])
        results[backend] = (unit, auto)
    for unit_auto in results.values():
        for res, ref in zip(unit_auto, results["torch"]):
            assert_same_result(res, ref)
    refs = [reference2d(x, y, n, lims[b]) for b, (x, y) in enumerate(sets)]
    for backend, (unit, auto) in results.items():
        counts = {"converged": 0, "failed": 0, "reference_not_finite": 0}
        used_limits = []
        for b, ref in enumerate(refs):
            res, i = (unit, b // 2) if b % 2 == 0 else (auto, b // 2)
            used_limits.append(((float(res.xgrid[i, 0]), float(2 * res.xgrid[i, -1] - res.xgrid[i, -2])),
                                (float(res.ygrid[i, 0]), float(2 * res.ygrid[i, -1] - res.ygrid[i, -2]))))
            dx = float(res.xgrid[i, 1] - res.xgrid[i, 0])
            dy = float(res.ygrid[i, 1] - res.ygrid[i, 0])
            integral = float(res.density[i].sum()) * dx * dy
            if ref is None or not np.isfinite(ref[0]).all():
                # kde_diffusion raises, or returns inf (zero data range on an axis with default limits)
                counts["failed" if ref is None else "reference_not_finite"] += 1
                assert torch.isfinite(res.density[i]).all() and torch.isfinite(res.bandwidth[i]).all()
                assert abs(integral - 1) < 1e-12
                if ref is None:
                    assert KDEStatus(int(res.status[i])) in FALLBACK and not res.converged[i], int(res.status[i])
                continue
            counts["converged"] += 1
            density, (xg, yg), bw = ref
            assert res.status[i] == KDEStatus.BRENTQ and res.converged[i], (b, int(res.status[i]))
            tol = 1e-6 if float(res.t[i]) < 1e-5 else 1e-9
            assert rel(res.density[i].numpy(), density) < tol, (b, rel(res.density[i].numpy(), density))
            assert rel(res.bandwidth[i].numpy(), bw) < tol
            assert rel(res.xgrid[i].numpy(), xg) < 1e-14 and rel(res.ygrid[i].numpy(), yg) < 1e-14
        if n == 64 and backend == "torch":
            # multi-root sets: brentq's root is reproduced, not the smallest one (no exception needed)
            limits_used = [UNIT if lim else u for lim, u in zip(lims, used_limits)]
            changes = sign_changes_2d(sets, n, limits_used)
            conv = torch.tensor([bool(((unit if b % 2 == 0 else auto).converged[b // 2])) for b in range(count)])
            counts["multi_root_converged"] = int(((changes > 1) & conv).sum())
            counts["multi_root_failed"] = int(((changes > 1) & ~conv).sum())
        print(f"\n2-D {fam} grid {n} [{backend}]: {counts}")
        assert counts["converged"] > 0


def assert_same_result(res, ref, rtol=1e-12):
    """Two KDE2dResults agree: equal status/converged/N, equal inf pattern, values to ``rtol`` (density: of each
    item's largest magnitude)."""
    assert torch.equal(res.status, ref.status) and torch.equal(res.converged, ref.converged)
    assert torch.equal(res.n_points, ref.n_points)
    assert torch.equal(res.xgrid, ref.xgrid) and torch.equal(res.ygrid, ref.ygrid)
    for name in ("t", "bandwidth"):
        a, b = getattr(res, name), getattr(ref, name)
        assert torch.equal(torch.isinf(a), torch.isinf(b)) and torch.isfinite(b[~torch.isinf(b)]).all(), name
        torch.testing.assert_close(a[~torch.isinf(a)], b[~torch.isinf(b)], rtol=rtol, atol=0, msg=name)
    scale = ref.density.abs().flatten(1).amax(1)[:, None, None]
    assert torch.isfinite(res.density).all()
    err = ((res.density - ref.density).abs() / scale).max()
    assert err <= rtol, float(err)


@pytest.mark.parametrize("fam", ("uniform", "cluster", "likert", "seedobs"))
def test_kde1d_matches_kde_diffusion(fam):
    """200 sets per family, each at grids 64, 512 and 1024 (kde_diffusion's default); limits (-1, 1) or auto."""
    sets = family(fam, 200, seed=zlib.crc32(f"{fam}-1d".encode()))
    X, _, L = padded(sets)
    combos = {}
    for n in (64, 512, 1024):
        for b in range(len(sets)):
            combos.setdefault((n, (-1.0, 1.0) if b % 2 == 0 else None), []).append(b)
    counts = {"converged": 0, "failed": 0, "reference_not_finite": 0}
    for (n, limits), items in combos.items():
        res = diffusion_kde1d(X[items], grid_size=n, limits=limits, lengths=L[items])
        for i, b in enumerate(items):
            x = sets[b][0]
            ref = reference1d(x, n, limits)
            dx = float(res.grid[i, 1] - res.grid[i, 0])
            if ref is None or not np.isfinite(ref[0]).all():
                counts["failed" if ref is None else "reference_not_finite"] += 1
                assert torch.isfinite(res.density[i]).all()
                assert abs(float(res.density[i].sum()) * dx - 1) < 1e-12
                if ref is None:
                    assert KDEStatus(int(res.status[i])) in FALLBACK
                continue
            counts["converged"] += 1
            density, grid, bw = ref
            assert res.status[i] == KDEStatus.BRENTQ, (b, int(res.status[i]))
            tol = 1e-6 if float(res.t[i]) < 1e-5 else 1e-9
            assert rel(res.density[i].numpy(), density) < tol
            assert abs(float(res.bandwidth[i]) - bw) / bw < tol
            assert rel(res.grid[i].numpy(), grid) < 1e-14
    print(f"\n1-D {fam}: {counts}")
    assert counts["converged"] > 0


def test_brentq_batched_matches_scipy_on_multi_root_functions():
    """Vectorised Brent returns scipy's root (not the smallest) for functions with 1 or 3 roots in the bracket."""
    from scipy.optimize import brentq

    rng = np.random.default_rng(3)
    roots = np.sort(rng.uniform(0.01, 0.09, (40, 3)), axis=1)
    single = rng.uniform(0, 1, 40) < 0.5
    coef = torch.tensor(roots)

    def f_torch(t, idx):
        c = coef[idx]
        cubic = -(t - c[:, :1]) * (t - c[:, 1:2]) * (t - c[:, 2:3]) * 1e3
        lin = -(t - c[:, :1])
        return torch.where(torch.tensor(single)[idx][:, None], lin, cubic)

    got, ok = brentq_batched(f_torch, torch.zeros(40, dtype=torch.float64), torch.full((40,), 0.1, dtype=torch.float64))
    assert ok.all()
    for b in range(40):
        r = roots[b]
        f = (lambda t: -(t - r[0])) if single[b] else (lambda t: -(t - r[0]) * (t - r[1]) * (t - r[2]) * 1e3)
        assert got[b].item() == pytest.approx(brentq(f, 0, 0.1), rel=1e-15, abs=1e-18)


# ------------------------------------------------------------------------------------------------ gradients


def _soft_inputs(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, n, generator=g, dtype=torch.float64) * 0.3).clamp(-0.9, 0.9)
    y = (torch.randn(1, n, generator=g, dtype=torch.float64) * 0.3).clamp(-0.9, 0.9)
    return x.requires_grad_(), y.requires_grad_()


def test_gradcheck_soft_implicit(backend):
    x, y = _soft_inputs(0)
    res = diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft", sharpness=8.0)
    assert res.status[0] == KDEStatus.BRENTQ

    def fn(x, y):
        r = diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft", sharpness=8.0)
        return r.density, r.t

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_gradcheck_soft_without_implicit_grad_equals_fixed_time(monkeypatch, backend):
    """implicit_grad=False: gradient = that of the same formula with t* held fixed (checked by gradcheck)."""
    from kdekit.ops.diffusion_kde import kde2d as dk

    x, y = _soft_inputs(1)
    res = diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft", implicit_grad=False)
    assert res.status[0] == KDEStatus.BRENTQ and not res.t.requires_grad
    gx, gy = torch.autograd.grad(res.density.pow(2).sum(), (x, y))
    t_fixed = res.t.detach()
    # the same pipeline with the solver replaced by the constant t*
    monkeypatch.setattr(
        dk, "_solve_2d",
        lambda psi, a_raw, solve, status0, single: (t_fixed.clone(), torch.zeros_like(status0), torch.ones_like(solve)),
    )

    def at_fixed_t(x, y):
        return diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft", implicit_grad=False).density

    assert torch.autograd.gradcheck(at_fixed_t, (x, y), eps=1e-6, atol=1e-5, rtol=1e-3)
    fx, fy = torch.autograd.grad(at_fixed_t(x, y).pow(2).sum(), (x, y))
    torch.testing.assert_close(gx, fx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gy, fy, rtol=1e-12, atol=1e-14)


def test_implicit_dt_matches_finite_difference_of_solved_t(backend):
    x, y = _soft_inputs(2, n=8)
    res = diffusion_kde2d(x, y, grid_size=32, limits=UNIT, histogram="soft")
    assert res.status[0] == KDEStatus.BRENTQ
    gx, gy = torch.autograd.grad(res.t.sum(), (x, y))
    h = 1e-5
    for j in range(x.shape[1]):
        for coord, g in ((0, gx), (1, gy)):
            vals = []
            for s in (h, -h):
                xp, yp = x.detach().clone(), y.detach().clone()
                (xp if coord == 0 else yp)[0, j] += s
                vals.append(float(diffusion_kde2d(xp, yp, grid_size=32, limits=UNIT, histogram="soft").t))
            fd = (vals[0] - vals[1]) / (2 * h)
            assert float(g[0, j]) == pytest.approx(fd, rel=1e-4, abs=1e-9 * abs(float(res.t.detach())) + 1e-12)


# ------------------------------------------------------------------------------------------------ dtypes


def test_low_precision_pooled_tables_close_to_float64(backend):
    g = torch.Generator().manual_seed(5)
    centre = torch.rand(16, 1, 2, generator=g, dtype=torch.float64) - 0.5
    pts = (centre + 0.25 * torch.randn(16, 30, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    tables = {}
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        r = diffusion_kde2d(pts[..., 0].to(dtype), pts[..., 1].to(dtype), grid_size=64, limits=UNIT, histogram="soft")
        assert r.density.dtype == dtype and r.bandwidth.dtype == dtype
        tables[dtype] = pool_density(r.density.double(), 4)
    assert (tables[torch.float32] - tables[torch.float64]).abs().max() < 1e-5
    # float16 rounds the input points (~5e-4): tables within 2e-3
    assert (tables[torch.float16] - tables[torch.float64]).abs().max() < 2e-3
    assert torch.isfinite(tables[torch.bfloat16]).all()


# ------------------------------------------------------------------------------------------------ batching, masks


def test_item_alone_equals_item_in_batch_and_mask_equals_dropping(backend):
    sets = family("cluster", 6, 11) + family("uniform", 6, 12)
    X, Y, L = padded(sets)
    batch = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L)
    for b, (x, y) in enumerate(sets):
        alone = diffusion_kde2d(torch.from_numpy(x), torch.from_numpy(y), grid_size=64, limits=UNIT)
        assert int(alone.status[0]) == int(batch.status[b])
        torch.testing.assert_close(alone.density[0], batch.density[b], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone.t[0], batch.t[b], rtol=1e-12, atol=0)
    mask = torch.arange(X.shape[1])[None, :] < L[:, None]
    garbage = torch.where(mask, X, torch.full_like(X, 7.0))
    masked = diffusion_kde2d(garbage, Y, grid_size=64, limits=UNIT, mask=mask)
    torch.testing.assert_close(masked.density, batch.density, rtol=0, atol=0)


def test_nan_item_does_not_affect_others(backend):
    sets = family("cluster", 4, 21)
    X, Y, _ = padded([(x[:5], y[:5]) for x, y in sets])
    clean = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT)
    Xn = X.clone()
    Xn[2, 1] = float("nan")
    res = diffusion_kde2d(Xn, Y, grid_size=64, limits=UNIT)
    assert res.status[2] == KDEStatus.NON_FINITE_INPUT and not res.converged[2]
    assert torch.isfinite(res.density).all()
    keep = [0, 1, 3]
    torch.testing.assert_close(res.density[keep], clean.density[keep], rtol=0, atol=0)
    assert float(res.density[2].sum()) * (2 / 64) ** 2 == pytest.approx(1, abs=1e-12)
    # masking the NaN point drops it instead
    m = torch.isfinite(Xn)
    dropped = diffusion_kde2d(Xn, Y, grid_size=64, limits=UNIT, mask=m)
    assert dropped.status[2] != KDEStatus.NON_FINITE_INPUT
    assert float(dropped.n_points[2]) == 4


# ------------------------------------------------------------------------------------------------ degenerate items


def test_degenerate_items_are_finite_and_normalised(backend):
    nan = float("nan")
    X = torch.tensor([[nan, nan, nan], [0.3, 0.3, 0.3], [0.2, 0.0, 0.0], [5.0, 6.0, 7.0], [0.1, -0.2, 0.5]])
    Y = torch.tensor([[nan, nan, nan], [0.1, 0.1, 0.1], [0.4, 0.0, 0.0], [5.0, 6.0, 7.0], [0.3, 0.2, -0.4]])
    mask = torch.tensor([[True] * 3, [True] * 3, [True, False, False], [True] * 3, [False] * 3])
    res = diffusion_kde2d(X.double(), Y.double(), grid_size=64, limits=UNIT, mask=mask)
    assert res.status[0] == KDEStatus.NON_FINITE_INPUT
    assert KDEStatus(int(res.status[1])) in (KDEStatus.BRENTQ, KDEStatus.SINGLE_LOCATION)  # identical points
    assert res.status[2] == KDEStatus.SINGLE_LOCATION  # one point
    assert res.status[3] == KDEStatus.NO_POINTS_IN_LIMITS
    assert res.status[4] == KDEStatus.NO_POINTS
    assert torch.isfinite(res.density).all()
    integral = res.density.sum((1, 2)) * (2 / 64) ** 2
    torch.testing.assert_close(integral, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    # identical points with default limits (zero range: value +- 0.5, numpy's convention)
    auto = diffusion_kde2d(X[1:2].double(), Y[1:2].double(), grid_size=64)
    assert torch.isfinite(auto.density).all()
    torch.testing.assert_close(auto.xgrid[0, 0], torch.tensor(-0.2, dtype=torch.float64))
    assert float(auto.density.sum()) * (1 / 64) ** 2 == pytest.approx(1, abs=1e-12)


def test_identical_points_match_kde_diffusion(backend):
    x = np.full(10, 0.25)
    y = np.full(10, -0.4)
    ref = reference2d(x, y, 64, UNIT)
    assert ref is not None
    res = diffusion_kde2d(torch.from_numpy(x), torch.from_numpy(y), grid_size=64, limits=UNIT)
    assert res.status[0] == KDEStatus.BRENTQ
    assert rel(res.density[0].numpy(), ref[0]) < 1e-6


def test_clip_negative_raises_values_below_eps(backend):
    sets = family("likert", 40, 31)
    X, Y, L = padded(sets)
    kept = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L)
    clipped = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, clip_negative=True)
    assert (kept.density < 0).any()
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(clipped.density, kept.density.clamp_min(eps), rtol=0, atol=0)


def test_binned_entry_points_equal_point_entry_points(backend):
    from kdekit.ops.hard_histogram import hard_histogram1d, hard_histogram2d

    sets = family("cluster", 8, 41)
    X, Y, L = padded(sets)
    mask = torch.arange(X.shape[1])[None, :] < L[:, None]
    pts = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, mask=mask)
    binned = hard_histogram2d(X, Y, 64, UNIT, mask=mask)
    bn = diffusion_kde2d_binned(binned, L.double(), UNIT)
    # the point path transforms the sparse counts bin by bin, the binned path densely: rounding differs
    torch.testing.assert_close(bn.density, pts.density, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.t, pts.t, rtol=1e-12, atol=0)
    pts1 = diffusion_kde1d(X, grid_size=256, limits=(-1.0, 1.0), mask=mask)
    bn1 = diffusion_kde1d_binned(hard_histogram1d(X, 256, (-1.0, 1.0), mask=mask), L.double(), (-1.0, 1.0))
    torch.testing.assert_close(bn1.density, pts1.density, rtol=0, atol=0)


def test_pool_equals_pool_density_of_full_density(backend):
    sets = family("cluster", 6, 51) + family("likert", 6, 52)
    X, Y, L = padded(sets)
    for histogram in ("hard", "soft"):
        full = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, histogram=histogram)
        pooled = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, histogram=histogram, pool=4)
        assert pooled.density.shape == (12, 4, 4)
        torch.testing.assert_close(pooled.density, pool_density(full.density, 4), rtol=1e-11, atol=1e-13)
        assert torch.equal(pooled.status, full.status)
        # with clipping: the blocks of the clipped density (the seed's order: clip, then pool)
        clipped = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, histogram=histogram, clip_negative=True)
        clipped_pooled = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, histogram=histogram, pool=4,
                                         clip_negative=True)
        torch.testing.assert_close(clipped_pooled.density, pool_density(clipped.density, 4), rtol=1e-11, atol=1e-13)
    # grid 512: most items are smooth on the grid, where clipping only lifts rounding noise (the fused kernel then
    # pools from the spectrum, within 1e-12 of the total); the narrow ones keep their negative lobes
    clipped = diffusion_kde2d(X, Y, grid_size=512, limits=UNIT, lengths=L, clip_negative=True)
    clipped_pooled = diffusion_kde2d(X, Y, grid_size=512, limits=UNIT, lengths=L, pool=4, clip_negative=True)
    torch.testing.assert_close(clipped_pooled.density, pool_density(clipped.density, 4), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="pool must be a positive int dividing"):
        diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, pool=3)


# ------------------------------------------------------------------------------------------------ cpp vs torch


def mixed_batch(dtype=torch.float64):
    """(x, y, lengths): seed-style pseudo-observation sets mixed with items that need the fallback rules or are
    degenerate: two points, all points identical, identical on one axis, one huge outlier, one point outside
    [-1, 1]^2, a NaN point, no valid point."""
    sets = family("seedobs", 6, 61)[:6] + family("uniform", 2, 62) + family("likert", 2, 63)
    sets += [
        (np.array([0.1, -0.4]), np.array([0.3, 0.2])),
        (np.full(20, 0.25), np.full(20, -0.5)),
        (np.full(30, 0.5), np.linspace(-0.8, 0.6, 30)),
        (np.append(np.linspace(-0.2, 0.2, 19), 1e6), np.linspace(-0.3, 0.1, 20)),
        (np.array([3.0]), np.array([0.0])),
        (np.array([0.1, np.nan, 0.3]), np.array([0.0, 0.1, 0.2])),
        (np.zeros(0), np.zeros(0)),
    ]
    X, Y, L = padded(sets)
    return X.to(dtype), Y.to(dtype), L


@pytest.mark.skipif(not HAS_CPP, reason="kdekit._C not built")
@pytest.mark.parametrize("n,limits,pool,clip", [(64, UNIT, None, False), (128, None, None, True), (64, UNIT, 4, False),
                                                (512, UNIT, 4, False)])
def test_cpp_points_path_equals_torch_path(n, limits, pool, clip):
    """Fused kernel (float64, one item per thread) + torch fallback for the items it leaves: every field equals the
    torch path, including the per-item status of fallback and degenerate items; nothing raises."""
    X, Y, L = mixed_batch()
    out = {}
    for backend in ("torch", "cpp"):
        with kdekit.use_backend(backend):
            out[backend] = diffusion_kde2d(X, Y, grid_size=n, limits=limits, lengths=L, pool=pool, clip_negative=clip)
    assert_same_result(out["cpp"], out["torch"])
    status = out["cpp"].status.tolist()
    assert status[-2:] == [KDEStatus.NON_FINITE_INPUT, KDEStatus.NO_POINTS]
    assert set(status[:-2]) & FALLBACK, status  # some items needed the fallback rules
    assert KDEStatus.BRENTQ in status


@pytest.mark.skipif(not HAS_CPP, reason="kdekit._C not built")
def test_cpp_points_path_float32_close_to_torch():
    """float32 points: the kernel computes in float64 and rounds; the torch path computes the DCTs in float32."""
    X, Y, L = mixed_batch(torch.float32)
    out = {}
    for backend in ("torch", "cpp"):
        with kdekit.use_backend(backend):
            out[backend] = diffusion_kde2d(X, Y, grid_size=64, limits=UNIT, lengths=L, pool=4)
    assert out["cpp"].density.dtype == torch.float32
    assert torch.equal(out["cpp"].status, out["torch"].status)
    torch.testing.assert_close(out["cpp"].density, out["torch"].density, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["cpp"].bandwidth, out["torch"].bandwidth, rtol=1e-4, atol=0)


@pytest.mark.skipif(not HAS_CPP, reason="kdekit._C not built")
def test_points_kernel_leaves_unsolved_items_nan():
    """kdekit::kde2d_points: items it does not solve (status != 0) come back NaN (never stale memory)."""
    X, Y, L = mixed_batch()
    mask = torch.arange(X.shape[1])[None, :] < L[:, None]
    rng = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(X.shape[0], 2).contiguous()
    count = L.double()
    for pool in (0, 4):
        density, times, status = torch.ops.kdekit.kde2d_points(
            X, Y, mask.double(), rng, rng, count, 64, pool, -math.inf, 0.1, 2e-12, 4 * np.finfo(float).eps, 100)
        bad = status != 0
        assert bad.any() and (~bad).any()
        assert torch.isnan(density[bad]).all() and torch.isnan(times[bad]).all()
        assert torch.isfinite(density[~bad]).all() and torch.isfinite(times[~bad]).all()


@pytest.mark.skipif(not HAS_CPP, reason="kdekit._C not built")
@pytest.mark.parametrize("histogram", ["hard", "soft"])
def test_cpp_bitwise_deterministic_across_runs_and_threads(histogram):
    """Same bits on a second run and with 1 or 2 threads (one item per thread, no shared accumulation)."""
    sets = family("seedobs", 40, 71) if histogram == "hard" else family("cluster", 200, 72)
    X, Y, L = padded(sets)
    n = 256 if histogram == "hard" else 64  # enough work per call for the kernels to use both threads
    runs = []
    for threads in (1, 2, 2):
        torch.set_num_threads(threads)
        x = X.clone().requires_grad_(histogram == "soft")
        with kdekit.use_backend("cpp"):
            res = diffusion_kde2d(x, Y, grid_size=n, limits=UNIT, lengths=L, histogram=histogram)
        grad = torch.autograd.grad(res.density.pow(2).sum(), x)[0] if histogram == "soft" else None
        runs.append((res.density.detach(), res.t.detach(), res.bandwidth.detach(), res.status, grad))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert a is None or torch.equal(a, b)


@pytest.mark.skipif(not HAS_CPP, reason="kdekit._C not built")
def test_cpp_soft_path_values_and_gradients_equal_torch():
    """Soft histogram (W2 path): kdekit::kde2d_solve for the root; values and gradients equal the torch solver's."""
    sets = family("cluster", 12, 81) + family("uniform", 4, 82)
    X, Y, L = padded(sets)
    target = torch.softmax(torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), -1)
    out = {}
    for backend in ("torch", "cpp"):
        x, y = X.clone().requires_grad_(), Y.clone().requires_grad_()
        with kdekit.use_backend(backend):
            res = diffusion_kde2d(x, y, grid_size=32, limits=UNIT, lengths=L, histogram="soft", clip_negative=True)
        probs = pool_density(res.density, 4).flatten(1)
        loss = -(target * torch.log(probs + 1e-8)).sum()
        out[backend] = (res, torch.autograd.grad(loss, (x, y)))
    (res_c, g_c), (res_t, g_t) = out["cpp"], out["torch"]
    assert_same_result(res_c, res_t)
    assert (res_t.status != KDEStatus.BRENTQ).any()  # uniform sets go through the torch fallback under cpp too
    for a, b in zip(g_c, g_t):
        assert torch.isfinite(a).all()  # also for the fallback items (no NaN leaking through masked branches)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * float(b.abs().max()))


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x=torch.zeros(2, 3, dtype=torch.int64)), "x must have a floating dtype"),
        (dict(y=torch.zeros(2, 4, dtype=torch.float64)), "y has shape"),
        (dict(grid_size=1), "grid_size must be >= 2"),
        (dict(grid_size=64.0), "grid_size must be an int"),
        (dict(limits=((1.0, -1.0), (-1.0, 1.0))), r"limits \(x axis\) needs lo < hi"),
        (dict(limits="wide"), "limits must be"),
        (dict(histogram="fuzzy"), "histogram must be 'hard' or 'soft'"),
        (dict(mask=torch.ones(2, 2, dtype=torch.bool)), "mask has shape"),
        (dict(x=torch.zeros(0, 3, dtype=torch.float64), y=torch.zeros(0, 3, dtype=torch.float64)), "empty batch"),
        (dict(chunk_size=0), "chunk_size must be a positive int"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(x=torch.rand(2, 3, dtype=torch.float64), y=torch.rand(2, 3, dtype=torch.float64))
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises((ValueError, TypeError), match=match):
        diffusion_kde2d(x, y, **args)


def test_binned_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        diffusion_kde2d_binned(torch.rand(1, 48, 48, dtype=torch.float64), 10, UNIT)
    with pytest.raises(ValueError, match="limits must be given"):
        diffusion_kde2d_binned(torch.rand(1, 64, 64, dtype=torch.float64), 10, None)
    with pytest.raises(ValueError, match="n_points"):
        diffusion_kde1d_binned(torch.rand(2, 64, dtype=torch.float64), torch.tensor([1.0, -1.0]), (-1.0, 1.0))


@pytest.mark.parametrize("histogram", ["hard", "soft"])
@pytest.mark.parametrize("n", [16, 64, 256])
def test_fallback_bandwidths_lie_between_one_bin_and_the_range(histogram, n, backend):
    """Where kde_diffusion fails, the bandwidth (per axis in 2-D) is at least one bin and at most the limits' range."""
    sets = family("uniform", 12, 71) + family("likert", 12, 72)
    sets += [(np.array([0.1, -0.3]), np.array([0.2, 0.5])), (np.array([0.4]), np.array([-0.2]))]
    X, Y, L = padded(sets)
    for limits in (UNIT, None):
        res = diffusion_kde2d(X, Y, grid_size=n, limits=limits, lengths=L, histogram=histogram)
        fallback = torch.tensor([KDEStatus(int(s)) in FALLBACK for s in res.status])
        assert fallback.sum() >= 4, res.status
        widths = torch.stack([res.xgrid[:, -1] - res.xgrid[:, 0], res.ygrid[:, -1] - res.ygrid[:, 0]], 1) * n / (n - 1)
        bw = res.bandwidth[fallback]
        assert (bw >= widths[fallback] / n * (1 - 1e-12)).all() and (bw <= widths[fallback] * (1 + 1e-12)).all(), bw
        r1 = diffusion_kde1d(X, grid_size=n, limits=limits and (-1.0, 1.0), lengths=L, histogram=histogram)
        fb1 = torch.tensor([KDEStatus(int(s)) in FALLBACK for s in r1.status])
        width1 = (r1.grid[:, -1] - r1.grid[:, 0]) * n / (n - 1)
        assert fb1.any() and (r1.bandwidth[fb1] >= width1[fb1] / n * (1 - 1e-12)).all()
        assert (r1.bandwidth[fb1] <= width1[fb1]).all()


def test_negative_binned_counts_are_refused():
    h = torch.rand(2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h[1, 3, 4] = -0.5
    with pytest.raises(ValueError, match="binned holds 1 negative count"):
        diffusion_kde2d_binned(h, 10, UNIT)
    with pytest.raises(ValueError, match="binned holds 1 negative count"):
        diffusion_kde1d_binned(h[:, 3], 10, (-1.0, 1.0))


def test_masks_must_be_bool():
    x = torch.rand(2, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        diffusion_kde2d(x, x, grid_size=16, mask=torch.ones(2, 5))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        kdekit.soft_histogram2d(x, x, 8, UNIT, 8.0, mask=torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        kdekit.nn.DiffusionKDE2d(n_observations=10)(x, x, torch.ones(2, 5))
