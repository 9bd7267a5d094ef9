"""kdekit.nn: DiffusionKDE2d, KDECrossEntropyLoss and CCCLoss against their functional forms under the torch and cpp
backends, torch.compile and opcheck of the module's op, and training through the KDE loss as a user does (every
backend that takes CPU tensors, three precisions), plus on the device (gpu)."""
import os

import numpy as np
import pytest
import torch

import kdekit
from kdekit.nn import CCCLoss, DiffusionKDE2d, KDECrossEntropyLoss
from tests.kdekit.helpers import DEVICE, backends, device_test, use


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
    pred, target = (torch.randn(4, 20, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(CCCLoss()(pred, target), (1 - kdekit.ccc(pred, target)).mean())
    torch.testing.assert_close(CCCLoss(unbiased=True)(pred, target),
                               (1 - kdekit.ccc(pred, target, unbiased=True)).mean())


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


def test_points_to_distribution_op_gradcheck_float64():
    """The custom op's registered backward (a vjp of the torch path) against finite differences, float64, with the
    implicit bandwidth gradient (without it the gradient holds t* fixed, which finite differences do not)."""
    from kdekit.labels import points_to_distribution_op

    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 9, generator=g, dtype=torch.float64) * 1.2 - 0.6).requires_grad_()
    y = (torch.rand(2, 9, generator=g, dtype=torch.float64) * 1.2 - 0.6).requires_grad_()

    def fn(x, y):
        return points_to_distribution_op(x, y, None, 4, 16, 8.0, [-1.0, 1.0, -1.0, 1.0], True, False)

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-5, rtol=1e-3)


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

# ---- training through the KDE loss -----------------------------------------------------------------------------------
# As a user does: a small network's raw per-annotator predictions (tanh outputs, no upsampling), DiffusionKDE2d with
# its defaults, KDECrossEntropyLoss, 100 Adam steps, in float32, float16 in / float32 out and bfloat16, on every
# backend that runs here: no step may give a non-finite gradient, and the loss must fall.

STEPS = 100
# annotators per utterance: 1 and 2 annotators, up to 50, and three utterances whose predictions all coincide
ANNOTATORS = [1, 2, 2, 3, 5, 8, 12, 20, 50, 6, 4, 30]
SAME_POINT = {3, 9, 10}
PRECISIONS = {"float32": (torch.float32, None), "float16-in/float32-out": (torch.float16, torch.float32),
              "bfloat16": (torch.bfloat16, None)}


class AnnotatorNet(torch.nn.Module):
    """Per-(utterance, annotator) predictions ``tanh(W [features, annotator embedding] + b)``, shape (U, A, 2)."""

    def __init__(self, features: int, annotators: int):
        super().__init__()
        self.embed = torch.nn.Embedding(annotators, 4)
        self.out = torch.nn.Sequential(torch.nn.Linear(features + 4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, features: torch.Tensor, annotator: torch.Tensor) -> torch.Tensor:
        f = features[:, None].expand(-1, annotator.shape[1], -1)
        return torch.tanh(self.out(torch.cat([f, self.embed(annotator)], -1)))


def _task(utterances: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor((ANNOTATORS * utterances)[:utterances])
    A = int(counts.max())
    mask = torch.arange(A)[None] < counts[:, None]
    annotator = torch.arange(A).expand(utterances, A).clone()
    for u in SAME_POINT:
        if u < utterances:
            annotator[u] = 0  # one annotator's prediction repeated: all points at one location
    features = torch.randn(utterances, 6, generator=g)
    target = torch.softmax(2.5 * torch.randn(utterances, 16, generator=g), -1).reshape(utterances, 4, 4)
    return features, annotator, mask, target


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("backend", backends())
def test_training_through_the_kde_loss(backend, precision, one_thread):
    in_dtype, out_dtype = PRECISIONS[precision]
    # the Triton interpreter runs one program at a time: fewer utterances keep it to seconds
    utterances = 6 if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1" else len(ANNOTATORS)
    features, annotator, mask, target = _task(utterances)
    torch.manual_seed(0)
    net = AnnotatorNet(features.shape[1], annotator.shape[1] + 1)
    kde, loss_fn = DiffusionKDE2d(out_dtype=out_dtype), KDECrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses, statuses = [], set()
    with use(backend):
        for step in range(STEPS):
            pred = net(features, annotator).to(in_dtype)
            probs = kde(pred[..., 0], pred[..., 1], mask)
            assert probs.dtype == (out_dtype or in_dtype) and (probs >= 0).all()
            loss = loss_fn(probs, target.to(probs.dtype))
            opt.zero_grad()
            loss.backward()
            bad = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()]
            assert not bad, f"step {step}: non-finite gradients in {bad}"
            opt.step()
            losses.append(loss.item())
            if step % 25 == 0:
                res = kdekit.points_to_distribution(pred[..., 0].detach(), pred[..., 1].detach(), mask=mask)
                statuses |= {kdekit.KDEStatus(int(s)).name for s in res.status}
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.05, f"loss did not fall: {first:.4f} -> {last:.4f} (statuses seen: {sorted(statuses)})"


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

@device_test
def test_module_and_loss_train_on_device():
    """A few Adam steps of a linear layer's raw outputs through DiffusionKDE2d (with upsampling) and the loss: finite
    gradients, parameters on the device, loss decreasing."""
    g = torch.Generator().manual_seed(24)
    features = torch.randn(16, 5, generator=g).to(DEVICE)
    target = torch.softmax(3 * torch.randn(16, 16, generator=g), -1).view(16, 4, 4).to(DEVICE)
    layer = torch.nn.Linear(5, 12).to(DEVICE)
    kde, loss_fn = DiffusionKDE2d(n_observations=100), KDECrossEntropyLoss()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    gen = torch.Generator(device=DEVICE).manual_seed(25)
    losses = []
    for _ in range(30):
        out = torch.tanh(layer(features)).view(16, 6, 2)
        loss = loss_fn(kde(out[..., 0], out[..., 1], generator=gen), target)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
