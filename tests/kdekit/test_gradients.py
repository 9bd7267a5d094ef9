"""Gradients of the soft-histogram diffusion KDE for every bandwidth rule: gradcheck (float64) per status, finite
gradients that never cross items, non-negative normalised tables, and the property that any valid batch gives finite
gradients (hypothesis)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdekit
from kdekit import KDEStatus
from kdekit.nn import KDECrossEntropyLoss

UNIT = ((-1.0, 1.0), (-1.0, 1.0))
pytestmark = pytest.mark.usefixtures("backend", "one_thread")

# point sets (x row, y row) whose soft-histogram KDE (sharpness 8) takes each rule at the given grid
STATUS_CASES = {
    "BRENTQ": (16, [[0.242, 0.21, 0.223, 0.124, 0.176, 0.266, 0.335, 0.065, 0.337, 0.321, 0.265],
                    [-0.085, -0.142, 0.032, 0.082, 0.066, 0.018, -0.076, -0.23, -0.112, -0.047, -0.238]]),
    "SMALLEST_ROOT": (32, [[0.784, 0.772, 0.783, 0.045, 0.769, 0.046, 0.772],  # two tight clusters
                           [0.101, 0.097, 0.109, -0.881, 0.108, -0.867, 0.105]]),
    "MIN_ABS_F": (16, [[-0.46, -0.918, -0.967, 0.627, 0.826, 0.213, 0.459, 0.087, 0.87, 0.632],  # spread out
                       [-0.995, 0.715, -0.933, 0.459, -0.649, 0.726, 0.083, -0.401, -0.155, -0.943]]),
    "SINGLE_LOCATION": (16, [[0.5], [0.0]]),  # one point: still one location after any perturbation
    "NO_POINTS_IN_LIMITS": (16, [[5.0, 5.2, 5.5], [0.0, 0.1, 0.2]]),
}


def _kde(x, y, grid, **kw):
    return kdekit.diffusion_kde2d(x, y, grid_size=grid, limits=UNIT, histogram="soft", **kw)


@pytest.mark.parametrize("name", sorted(STATUS_CASES))
def test_gradcheck_for_every_status(name):
    grid, pts = STATUS_CASES[name]
    x, y = (torch.tensor([row], dtype=torch.float64, requires_grad=True) for row in pts)
    res = _kde(x, y, grid)
    assert KDEStatus(int(res.status)).name == name

    def fn(x, y):
        r = _kde(x, y, grid)
        return r.density, r.t.where(torch.isfinite(r.t), 0.0), r.bandwidth.where(torch.isfinite(r.bandwidth), 0.0)

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-5, rtol=1e-3)
    gx, gy = torch.autograd.grad(res.density.square().sum(), (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    if name == "NO_POINTS_IN_LIMITS":  # a uniform density does not depend on the points
        assert (gx == 0).all() and (gy == 0).all()


def _mixed_batch():
    """Every status at grid 32 in one batch, padded, plus a NaN point, an empty item and limits so narrow that the
    density is infinite (per-item limits tensor)."""
    sets = [np.array(STATUS_CASES[name][1]) for name in ("BRENTQ", "SMALLEST_ROOT", "MIN_ABS_F", "SINGLE_LOCATION",
                                                         "NO_POINTS_IN_LIMITS")]
    sets += [np.array([[0.1, np.nan, 0.3], [0.0, 0.2, 0.1]]), np.zeros((2, 0)),
             np.array([[2e-301, 6e-301, 3e-301], [1e-301, 5e-301, 7e-301]])]
    n = max(s.shape[1] for s in sets)
    x, y = torch.zeros(len(sets), n, dtype=torch.float64), torch.zeros(len(sets), n, dtype=torch.float64)
    for b, s in enumerate(sets):
        x[b, :s.shape[1]], y[b, :s.shape[1]] = torch.from_numpy(s[0]), torch.from_numpy(s[1])
    lengths = torch.tensor([s.shape[1] for s in sets])
    limits = torch.tensor(UNIT, dtype=torch.float64).repeat(len(sets), 1, 1)
    limits[-1] = torch.tensor([[0.0, 1e-300], [0.0, 1e-300]], dtype=torch.float64)
    return x, y, lengths, limits


def test_gradients_are_finite_and_never_cross_items():
    x, y, lengths, limits = _mixed_batch()
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    res = kdekit.diffusion_kde2d(xs, ys, grid_size=32, limits=limits, lengths=lengths, histogram="soft")
    statuses = {KDEStatus(int(s)).name for s in res.status}
    assert {"BRENTQ", "SMALLEST_ROOT", "MIN_ABS_F", "SINGLE_LOCATION", "NO_POINTS_IN_LIMITS", "NON_FINITE_INPUT",
            "NO_POINTS"} <= statuses
    # limits of width 1e-300: the sigmoids cannot resolve them (empty histogram, no fixed point) and 1 / area is inf
    assert KDEStatus(int(res.status[-1])).name in ("NON_FINITE_FIXED_POINT", "NON_FINITE_DENSITY")
    finite = torch.isfinite(res.density.detach()).flatten(1).all(1)
    assert finite.sum() == len(x) - 1 and not finite[-1]  # only the overflowing item
    weight = torch.rand(res.density.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = (res.density[finite] * weight[finite]).sum() + res.t[torch.isfinite(res.t)].sum()
    gx, gy = torch.autograd.grad(loss, (xs, ys))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # each item's gradient is what it gets alone (nothing leaks between items)
    for b in range(5):
        xb, yb = x[b:b + 1, :lengths[b]].clone().requires_grad_(), y[b:b + 1, :lengths[b]].clone().requires_grad_()
        rb = kdekit.diffusion_kde2d(xb, yb, grid_size=32, limits=limits[b:b + 1], histogram="soft")
        ref = torch.autograd.grad((rb.density * weight[b:b + 1]).sum() + rb.t.sum(), (xb, yb))
        torch.testing.assert_close(gx[b, :lengths[b]], ref[0][0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gy[b, :lengths[b]], ref[1][0], rtol=1e-9, atol=1e-12)
    assert (gx[5:7] == 0).all() and (gy[5:7] == 0).all()  # NaN point (uniform) and empty item


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_tables_are_non_negative_and_normalised_and_the_loss_finite(dtype):
    """Far-corner clusters: the KDE's Gibbs lobes make float32 blocks slightly negative (-1e-7), which took the seed's
    log(p + 1e-8) to NaN; the tables are clamped and renormalised."""
    g = torch.Generator().manual_seed(0)
    x = (-1 + 0.25 * torch.randn(32, 100, generator=g, dtype=torch.float64)).clamp(-1, 1)
    y = (1 + 0.25 * torch.randn(32, 100, generator=g, dtype=torch.float64)).clamp(-1, 1)
    xs, ys = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
    probs = kdekit.points_to_distribution(xs, ys).probs
    assert probs.dtype == dtype and (probs >= 0).all()
    sums = probs.double().sum((1, 2))
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 2e-3)
    loss = KDECrossEntropyLoss()(probs, torch.full(probs.shape, 1 / 16, dtype=dtype))
    assert loss.dtype == dtype and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(xs.grad).all() and torch.isfinite(ys.grad).all()


@st.composite
def batches(draw):
    """1-4 items of 0-12 points each: uniform, Likert, repeated and out-of-range values, random masks."""
    B, N = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    pool = st.one_of(st.floats(-1.3, 1.3), st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), st.just(0.25))
    xy = draw(st.lists(st.lists(st.tuples(pool, pool), min_size=N, max_size=N), min_size=B, max_size=B))
    mask = draw(st.lists(st.lists(st.booleans(), min_size=N, max_size=N), min_size=B, max_size=B))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    arr = torch.tensor(xy, dtype=torch.float64)
    return arr[..., 0].to(dtype), arr[..., 1].to(dtype), torch.tensor(mask)


@settings(max_examples=2000)
@given(batches())
def test_gradients_are_finite_for_any_valid_batch(batch):
    x, y, mask = batch
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    probs = kdekit.points_to_distribution(xs, ys, grid=16, mask=mask).probs
    assert (probs >= 0).all() and torch.allclose(probs.double().sum((1, 2)), torch.ones(len(x), dtype=torch.float64),
                                                atol=1e-5)
    target = torch.linspace(1, 2, 16, dtype=x.dtype).reshape(4, 4)
    KDECrossEntropyLoss()(probs, (target / target.sum()).expand_as(probs)).backward()
    assert torch.isfinite(xs.grad).all() and torch.isfinite(ys.grad).all()


def test_overflowing_density_has_its_own_status():
    """Points spread over 1e-300: the fixed point converges but n / width overflows float64."""
    g = np.random.default_rng(0)
    x, y = (torch.tensor(g.uniform(-0.8, 0.8, (1, 20)) * 1e-300) for _ in range(2))
    res = kdekit.diffusion_kde2d(x, y, grid_size=64)
    assert res.status[0] == KDEStatus.NON_FINITE_DENSITY and not res.converged[0]
    assert torch.isfinite(res.t).all() and not torch.isfinite(res.density).all()
