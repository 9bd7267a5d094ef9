"""kdekit::soft_kde2d_pooled, the training loss's KDE fused on CPU (soft histogram -> DCT -> fixed point ->
smoothing -> k x k blocks, one backward op): the same values, statuses and gradients as the torch path for every
item (the items it does not solve are re-solved there), gradcheck in float64, NaN for items it leaves, and results
that do not depend on the number of threads."""
import math

import numpy as np
import pytest
import torch

import kdekit
from kdekit import _ext

pytestmark = pytest.mark.skipif(not _ext.LOADED, reason=f"kdekit._C not built: {_ext.LOAD_ERROR}")
ops = torch.ops.kdekit
UNIT = ((-1.0, 1.0), (-1.0, 1.0))
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=2e-6)}


def _points(B, N, dtype, seed, hard_items=True):
    """Per-annotator-like predictions (tanh of a per-item centre + noise), with items that take the fallback rules
    or are degenerate when ``hard_items``: one location, all outside the limits, three valid points, padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.tanh(0.5 * torch.randn(B, 1, generator=g, dtype=torch.float64)
                   + 0.3 * torch.randn(B, N, generator=g, dtype=torch.float64))
    y = torch.tanh(0.5 * torch.randn(B, 1, generator=g, dtype=torch.float64)
                   + 0.3 * torch.randn(B, N, generator=g, dtype=torch.float64))
    mask = torch.ones(B, N, dtype=torch.bool)
    if hard_items:
        x[0], y[0] = 0.3, -0.2  # one location
        y[1] = 5.0  # no point inside the limits
        mask[2, 3:] = False  # three points
        mask[3, N // 2:] = False  # padding
    return x.to(dtype), y.to(dtype), mask


def _run(backend, x, y, mask, G, gb, **kw):
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    with kdekit.use_backend(backend):
        res = kdekit.diffusion_kde2d(x, y, grid_size=kw.pop("grid", 32), limits=UNIT, mask=mask, histogram="soft",
                                     pool=4, **kw)
        finite_bw = res.bandwidth.where(torch.isfinite(res.bandwidth), 0.0)
        loss = (res.density * G).sum() + (finite_bw * gb).sum() + res.t.where(torch.isfinite(res.t), 0.0).sum()
        gx, gy = torch.autograd.grad(loss, (x, y))
    return res, gx, gy


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("clip_negative", [False, True])
@pytest.mark.parametrize("implicit_grad", [True, False])
@pytest.mark.parametrize("grid", [4, 32])  # 4: fewer rows than a register block of the spectrum's products
def test_values_and_gradients_equal_the_torch_path(dtype, clip_negative, implicit_grad, grid):
    x, y, mask = _points(12, 40, dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    G = torch.randn(12, 4, 4, generator=g, dtype=torch.float64).to(dtype)
    gb = torch.randn(12, 2, generator=g, dtype=torch.float64).to(dtype)
    kw = dict(clip_negative=clip_negative, implicit_grad=implicit_grad, grid=grid)
    ref, rgx, rgy = _run("torch", x, y, mask, G, gb, **kw)
    res, gx, gy = _run("cpp", x, y, mask, G, gb, **kw)
    assert torch.equal(res.status, ref.status)
    assert (res.status == int(kdekit.KDEStatus.BRENTQ)).sum() >= 8  # the fused kernel carried most items
    assert (res.status != int(kdekit.KDEStatus.BRENTQ)).any()  # and the torch path the others
    for got, want in ((res.density, ref.density), (res.bandwidth, ref.bandwidth), (gx, rgx), (gy, rgy)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, **TOL[dtype])
    torch.testing.assert_close(res.t, ref.t, rtol=1e-9 if dtype == torch.float64 else 1e-4, atol=0)
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # padded points get no gradient; neither do the items whose density is flat
    assert (gx[3, 20:] == 0).all() and (gx[1] == 0).all()


def test_gradients_equal_the_torch_path_where_the_clip_binds_and_where_it_does_not():
    """Clustered predictions: the clip raises cells of some items' densities (their backward maps through the
    density) and of others not (the pooled map, without the density)."""
    g = torch.Generator().manual_seed(0)
    centre = 0.5 * torch.randn(12, 1, generator=g, dtype=torch.float64)
    x = torch.tanh(centre + 0.1 * torch.randn(12, 40, generator=g, dtype=torch.float64)).float()
    y = torch.tanh(centre.flip(0) + 0.1 * torch.randn(12, 40, generator=g, dtype=torch.float64)).float()
    w = torch.ones_like(x)
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(12, 2).contiguous()
    raised = ops.soft_kde2d_pooled(x, y, w, r, r, w.sum(1).double(), 64, 4, 8.0, float(torch.finfo(x.dtype).eps),
                                   0.1, 2e-12, 4 * float(np.finfo(float).eps), 100, True)[4]
    clipped = raised.flatten(1).any(1)
    assert raised.shape == (12, 64, 64) and clipped.any() and not clipped.all()
    G = torch.randn(12, 4, 4, generator=g).float()
    gb = torch.randn(12, 2, generator=g).float()
    mask = torch.ones_like(x, dtype=torch.bool)
    ref, rgx, rgy = _run("torch", x, y, mask, G, gb, clip_negative=True, grid=64)
    res, gx, gy = _run("cpp", x, y, mask, G, gb, clip_negative=True, grid=64)
    for got, want in ((res.density, ref.density), (gx, rgx), (gy, rgy)):
        torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_the_fused_kernel_serves_the_training_loss():
    """points_to_distribution (pooled soft histogram) on CPU under cpp runs the fused op and its backward op."""
    x, y, _ = _points(4, 30, torch.float32, seed=3, hard_items=False)
    x.requires_grad_()
    with kdekit.use_backend("cpp"), torch.profiler.profile() as prof:
        kdekit.points_to_distribution(x, y, k=4, grid=64).probs.square().sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert {"kdekit::soft_kde2d_pooled", "kdekit::soft_kde2d_pooled_backward"} <= names
    assert "kdekit::soft_histogram2d" not in names  # no torch-path pieces


@pytest.mark.parametrize("clip_negative", [False, True])
def test_gradcheck_through_the_fused_op(clip_negative):
    x, y, _ = _points(3, 12, torch.float64, seed=4, hard_items=False)
    x.requires_grad_()
    y.requires_grad_()

    def fn(x, y):
        with kdekit.use_backend("cpp"):
            res = kdekit.diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft", pool=4,
                                         clip_negative=clip_negative)
        assert (res.status == 0).all()
        return res.density, res.bandwidth, res.t

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_unsolved_items_come_back_nan_and_solved_ones_finite():
    x, y, mask = _points(6, 30, torch.float64, seed=5)
    w = mask.double()
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(6, 2).contiguous()
    count = torch.where(torch.arange(6) == 1, 0.0, w.sum(1))  # count 0: skipped
    blocks, times, status, spectrum, raised, sums = ops.soft_kde2d_pooled(
        torch.where(mask, x, 0.0), torch.where(mask, y, 0.0), w, r, r, count, 32, 4, 8.0, -math.inf, 0.1, 2e-12,
        4 * float(np.finfo(float).eps), 100, True)
    bad = status != 0
    assert bad[1] and (~bad).sum() >= 3
    assert torch.isnan(blocks[bad]).all() and torch.isnan(times[bad]).all()
    assert torch.isfinite(blocks[~bad]).all() and torch.isfinite(times[~bad]).all()
    torch.testing.assert_close(blocks[~bad].sum((1, 2)), torch.ones(int((~bad).sum()), dtype=torch.float64))
    assert spectrum.shape == (6, 32, 32) and spectrum.dtype == torch.float64
    assert raised.shape == (6, 0, 0)  # clip -inf: no flags
    torch.testing.assert_close(blocks[~bad], sums[~bad] / sums[~bad].sum((1, 2), keepdim=True))


def test_bad_arguments_name_the_argument():
    x, y, mask = _points(2, 10, torch.float64, seed=6, hard_items=False)
    w = torch.ones_like(x)
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(2, 2).contiguous()
    count = torch.full((2,), 10.0, dtype=torch.float64)
    tail = (8.0, -math.inf, 0.1, 2e-12, 1e-15, 100, True)
    with pytest.raises(RuntimeError, match="pool must divide grid"):
        ops.soft_kde2d_pooled(x, y, w, r, r, count, 32, 3, *tail)
    with pytest.raises(RuntimeError, match="y must have shape"):
        ops.soft_kde2d_pooled(x, y[:, :5], w, r, r, count, 32, 4, *tail)
    with pytest.raises(RuntimeError, match="x must be float32 or float64"):
        ops.soft_kde2d_pooled(x.half(), y.half(), w.half(), r, r, count, 32, 4, *tail)


def test_results_do_not_depend_on_the_number_of_threads():
    x, y, mask = _points(8, 40, torch.float32, seed=7)
    G = torch.randn(8, 4, 4, generator=torch.Generator().manual_seed(8))
    gb = torch.zeros(8, 2)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run("cpp", x, y, mask, G, gb, clip_negative=True, grid=64)
        torch.set_num_threads(2)
        two = _run("cpp", x, y, mask, G, gb, clip_negative=True, grid=64)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one[0].density, two[0].density)
    assert torch.equal(one[1], two[1]) and torch.equal(one[2], two[2])


def test_gradcheck_of_the_op_with_a_clip_floor_that_binds():
    """A clip floor of 0.05 raises many cells of both items' densities: the backward maps through the density."""
    g = torch.Generator().manual_seed(9)
    x, y = ((0.2 * torch.randn(2, 30, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2))
    w = torch.ones(2, 30, dtype=torch.float64)
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(2, 2).contiguous()
    count = torch.full((2,), 30.0, dtype=torch.float64)

    def blocks(x, y):
        return ops.soft_kde2d_pooled(x, y, w, r, r, count, 16, 4, 8.0, 0.05, 0.1, 2e-12,
                                     4 * float(np.finfo(float).eps), 100, True)

    assert blocks(x, y)[4].flatten(1).any(1).all()  # cells of both items raised
    assert torch.autograd.gradcheck(lambda x, y: blocks(x, y)[0], (x, y), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("clip", [-math.inf, 1e-3])
def test_opcheck(clip):
    """torch.library.opcheck of the op (schema, fake kernel, autograd registration, AOT dispatch), without and with
    clipping."""
    g = torch.Generator().manual_seed(0)
    x, y = ((0.15 * torch.randn(2, 40, generator=g, dtype=torch.float64)).clamp(-0.5, 0.5).requires_grad_()
            for _ in range(2))  # inside the limits: every item solved (opcheck compares outputs)
    w = (torch.rand(2, 40, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(2, 2).contiguous()
    count = torch.full((2,), 40.0, dtype=torch.float64)
    args = (x, y, w, r, r, count, 32, 4, 8.0, clip, 0.1, 2e-12, 4 * float(np.finfo(float).eps), 100, True)
    assert (ops.soft_kde2d_pooled(*args)[2] == 0).all()
    torch.library.opcheck(ops.soft_kde2d_pooled, args)
