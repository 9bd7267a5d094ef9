"""torch.library.opcheck (schema, autograd registration, fake tensor, AOT dispatch) for every kdekit op, and
torch.compile(fullgraph=True) through the fused ops."""
import math
import numpy as np
import pytest
import torch

from kdekit import _ext

pytestmark = pytest.mark.skipif(not _ext.LOADED, reason=f"kdekit._C not built: {_ext.LOAD_ERROR}")
ops = torch.ops.kdekit
EPS4 = 4 * float(np.finfo(float).eps)  # a Python float (a numpy scalar becomes a tensor under dynamo)


def _inputs(B=2, N=12, dtype=torch.float64, grad=False):
    g = torch.Generator().manual_seed(0)
    x = (0.3 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    y = (0.3 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    w = torch.rand(B, N, generator=g, dtype=torch.float64).to(dtype) + 0.5
    r = torch.tensor([[-1.0, 1.0]], dtype=torch.float64).expand(B, 2).contiguous()
    if grad:
        x, y, w = (t.requires_grad_() for t in (x, y, w))
    return x, y, w, r


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_soft_and_hard_histogram(dtype):
    x, y, w, r = _inputs(dtype=dtype, grad=True)
    torch.library.opcheck(ops.soft_histogram2d, (x, y, w, r, r, 8, 8.0))
    torch.library.opcheck(ops.hard_histogram2d, (x.detach(), y.detach(), w, r, r, 8))
    g = torch.rand(2, 8, 8, dtype=dtype)
    torch.library.opcheck(ops.soft_histogram2d_backward, (g, x.detach(), y.detach(), w.detach(), r, r, 8, 8.0))
    torch.library.opcheck(ops.hard_histogram2d_backward, (g, x.detach(), y.detach(), r, r, 8))


def test_opcheck_kde_ops():
    x, y, w, r = _inputs(N=40)
    count = torch.full((2,), 40.0, dtype=torch.float64)
    args = (x, y, w, r, r, count, 32, 4, -math.inf, 0.1, 2e-12, EPS4, 100)
    assert (ops.kde2d_points(*args)[2] == 0).all()  # opcheck compares outputs, so no NaN-filled (failed) items
    torch.library.opcheck(ops.kde2d_points, args)
    torch.library.opcheck(ops.kde2d_points, args[:7] + (0,) + args[8:])
    from kdekit.ops.dct import dct2

    hist = ops.hard_histogram2d(x, y, w, r, r, 32)
    spectrum = dct2(hist / 40) / 2  # any spectrum: only the op's plumbing is checked here
    assert (ops.kde2d_solve(spectrum, count, 0.1, 2e-12, EPS4, 100)[1] == 0).all()
    torch.library.opcheck(ops.kde2d_solve, (spectrum, count, 0.1, 2e-12, EPS4, 100))


@pytest.mark.parametrize("clip", [-math.inf, 1e-3])
def test_opcheck_soft_kde2d_pooled(clip):
    x, y, w, r = _inputs(N=40, grad=True)
    x, y = x.detach() * 0.5, y.detach() * 0.5  # inside the limits: every item solved (opcheck compares outputs)
    x.requires_grad_()
    y.requires_grad_()
    count = torch.full((2,), 40.0, dtype=torch.float64)
    args = (x, y, w, r, r, count, 32, 4, 8.0, clip, 0.1, 2e-12, EPS4, 100, True)
    assert (ops.soft_kde2d_pooled(*args)[2] == 0).all()
    torch.library.opcheck(ops.soft_kde2d_pooled, args)


def test_opcheck_metrics():
    x, y, _, _ = _inputs(grad=True)
    torch.library.opcheck(ops.ccc, (x, y, False))
    torch.library.opcheck(ops.ccc_backward, (torch.rand(2, dtype=torch.float64), x.detach(), y.detach(), True))
    p = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    q = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    for kind in ("kl", "jsd"):
        torch.library.opcheck(ops.divergence, (p, q, kind))
        torch.library.opcheck(ops.divergence_backward, (torch.rand(3, dtype=torch.float64), p.detach(), q.detach(), kind))


def test_compile_fullgraph_soft_kde_cross_entropy_loss():
    """A pooled soft-histogram diffusion-KDE cross-entropy loss built from the fused ops compiles without breaks."""
    from kdekit.ops.dct import dct2, idct2

    grid, k = 32, 4

    def loss_fn(x, y, w, r, target):
        hist = ops.soft_histogram2d(x, y, w, r, r, grid, 8.0)
        a = dct2(hist / x.shape[1])
        scale = torch.ones(grid, dtype=a.dtype)
        scale[0] = 0.5
        a = a * scale[:, None] * scale[None, :]
        times, status = ops.kde2d_solve(a.detach(), torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64),
                                        0.1, 2e-12, EPS4, 100)
        kk = torch.arange(grid, dtype=a.dtype) ** 2
        smooth = torch.exp(-(torch.pi ** 2) * kk[None, :, None] * times[:, 2, None, None] / 2) * \
            torch.exp(-(torch.pi ** 2) * kk[None, None, :] * times[:, 1, None, None] / 2)
        dens = idct2(a * smooth / (scale[:, None] * scale[None, :]))
        pooled = dens.reshape(-1, k, grid // k, k, grid // k).sum((2, 4))
        probs = pooled / pooled.sum((1, 2), keepdim=True)
        return -(target * torch.log(probs + 1e-8)).sum((1, 2)).mean()

    x, y, w, r = _inputs(N=60, grad=True)
    target = torch.full((2, k, k), 1.0 / k ** 2, dtype=torch.float64)
    eager = loss_fn(x, y, w, r, target)
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")(x, y, w, r, target)
    torch.testing.assert_close(compiled, eager)
    gx_eager, = torch.autograd.grad(eager, x)
    gx_comp, = torch.autograd.grad(compiled, x)
    torch.testing.assert_close(gx_comp, gx_eager)
    assert torch.isfinite(gx_eager).all() and gx_eager.abs().sum() > 0
