import pytest
import torch

import kdekit
from kdekit.nn import CCCLoss, DiffusionKDE2d, KDECrossEntropyLoss


BACKENDS = [name for name in ("torch", "cpp") if kdekit.backends()[name][0]]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test under each available backend."""
    with kdekit.use_backend(request.param):
        yield request.param


def _points(B=3, N=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, N, 2, generator=g, dtype=dtype) * 1.6 - 0.8).unbind(-1)


def test_diffusion_kde2d_module_equals_functional(backend):
    x, y = _points()
    mod = DiffusionKDE2d(grid=32, k=4, sharpness=8.0)
    ref = kdekit.points_to_distribution(x, y, k=4, grid=32, sharpness=8.0).probs
    torch.testing.assert_close(mod(x, y), ref, rtol=0, atol=0)
    assert "grid=32" in repr(mod)


def test_diffusion_kde2d_module_upsamples_like_pseudo_observations(backend):
    x, y = _points(N=5)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, 3:] = False
    mod = DiffusionKDE2d(grid=32, k=2, n_observations=50)
    out = mod(x, y, mask=mask, generator=torch.Generator().manual_seed(3))
    ratings = torch.stack([x, y], -1).masked_fill(~mask[..., None], float("nan"))
    obs = kdekit.pseudo_observations(ratings, 50, torch.Generator().manual_seed(3))
    ref = kdekit.points_to_distribution(obs[..., 0], obs[..., 1], k=2, grid=32).probs
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_kde_cross_entropy_matches_manual_and_backprops(backend):
    x, y = _points()
    x.requires_grad_(True)
    pred = DiffusionKDE2d(grid=32)(x, y)
    target = torch.softmax(torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), -1)
    target = target.view(3, 4, 4)
    loss = KDECrossEntropyLoss()(pred, target)
    p = pred.flatten(1) / pred.flatten(1).sum(1, keepdim=True)
    manual = -(target.flatten(1) * torch.log(p + 1e-8)).sum(1).mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="target has shape"):
        KDECrossEntropyLoss()(pred, target[:2])


def test_ccc_loss_module():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 20, generator=g, dtype=torch.float64), torch.randn(4, 20, generator=g, dtype=torch.float64)
    torch.testing.assert_close(CCCLoss()(pred, target), (1 - kdekit.ccc(pred, target)).mean())
    torch.testing.assert_close(CCCLoss(unbiased=True)(pred, target), (1 - kdekit.ccc(pred, target, unbiased=True)).mean())


def test_compile_fullgraph_diffusion_kde_cross_entropy_loss():
    """torch.compile(fullgraph=True) of DiffusionKDE2d + KDECrossEntropyLoss on CPU: same loss and gradient as eager
    (the per-item bandwidth rules run inside the opaque ``kdekit::points_to_distribution`` op)."""
    torch.manual_seed(3)
    module, criterion = DiffusionKDE2d(grid=32, k=4), KDECrossEntropyLoss()
    x = (torch.rand(5, 40, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    y = (torch.rand(5, 40, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    mask = torch.rand(5, 40) < 0.8
    target = torch.rand(5, 4, 4, dtype=torch.float64)
    target = target / target.sum((1, 2), keepdim=True)

    def loss_fn(x, y, mask, target):
        return criterion(module(x, y, mask), target)

    eager = loss_fn(x, y, mask, target)
    g_eager = torch.autograd.grad(eager, (x, y))
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")(x, y, mask, target)
    g_comp = torch.autograd.grad(compiled, (x, y))
    torch.testing.assert_close(compiled, eager, atol=1e-12, rtol=1e-10)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
        assert a.abs().sum() > 0


def test_points_to_distribution_op_opcheck():
    from kdekit.labels import points_to_distribution_op

    torch.manual_seed(4)
    x = (torch.rand(3, 30, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    y = (torch.rand(3, 30, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    torch.library.opcheck(points_to_distribution_op, (x, y, None, 4, 32, 8.0, [-1.0, 1.0, -1.0, 1.0], True, False))
    probs = points_to_distribution_op(x, y, None, 4, 32, 8.0, [-1.0, 1.0, -1.0, 1.0], True, False)
    ref = kdekit.points_to_distribution(x, y, k=4, grid=32).probs
    torch.testing.assert_close(probs, ref, atol=0, rtol=0)


@pytest.mark.parametrize("limits", [1.0, ((-1.0, 1.0), None)])
def test_compile_names_limits_it_cannot_take(limits):
    module = DiffusionKDE2d(grid=16, limits=limits)
    x = torch.rand(2, 10, dtype=torch.float64)
    with pytest.raises(Exception, match="limits"):
        torch.compile(module, fullgraph=True, backend="aot_eager")(x, x)


def test_kde_cross_entropy_reduction_dtype_and_bad_tables():
    g = torch.Generator().manual_seed(5)
    pred = torch.softmax(torch.randn(6, 16, generator=g, dtype=torch.float64), -1).reshape(6, 4, 4)
    target = torch.softmax(torch.randn(6, 16, generator=g, dtype=torch.float64), -1).reshape(6, 4, 4)
    per_item = -(target.flatten(1) * torch.log(pred.flatten(1) + 1e-8)).sum(1)  # the seed's formula, float64
    loss = KDECrossEntropyLoss(reduction="none")(pred, target)
    assert loss.dtype == torch.float64  # computed in the inputs' dtype, not float32
    torch.testing.assert_close(loss, per_item, rtol=1e-14, atol=0)
    torch.testing.assert_close(KDECrossEntropyLoss()(pred, target), per_item.mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(KDECrossEntropyLoss(reduction="sum")(pred, target), per_item.sum(), rtol=1e-14, atol=0)
    # a slightly negative cell (KDE rounding) counts as 0: finite loss and gradient
    bad = pred.clone()
    bad[0, 0, 0] = -1.4e-7
    bad = bad.requires_grad_()
    out = KDECrossEntropyLoss()(bad.float(), target.float())
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(bad.grad).all()
    # float16 tables: eps raised to float16's smallest normal, so a zero cell's gradient fits float16
    half = pred.half().requires_grad_()
    zero = half.detach().clone()
    zero[0, 3, 0] = 0
    half = zero.requires_grad_()
    KDECrossEntropyLoss()(half, target.half()).backward()
    assert torch.isfinite(half.grad).all()
    with pytest.raises(ValueError, match="reduction must be"):
        KDECrossEntropyLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="eps must be > 0"):
        KDECrossEntropyLoss(eps=0)
