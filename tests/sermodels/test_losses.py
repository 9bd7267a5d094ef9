"""Task 1 (per-annotator CCC), Task 2 (DiffKDE cross-entropy) and the baseline loss."""
import numpy as np
import pytest
import torch

import kdekit
from sermodels import losses


def _pairs(seed=0, B=6, M=5):
    g = torch.Generator().manual_seed(seed)
    ratings = torch.rand(B, M, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
    pred = ratings + 0.3 * torch.randn(B, M, 2, generator=g, dtype=torch.float64)
    pad = torch.rand(B, M, generator=g) < 0.3
    pad[:, 0] = False
    ratings[pad] = float("nan")
    pred[pad] = float("nan")
    return pred, ratings, pad


def _ccc_np(x, y, ddof):
    cov = ((x - x.mean()) * (y - y.mean())).sum() / (len(x) - ddof)
    return 2 * cov / (x.var(ddof=ddof) + y.var(ddof=ddof) + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("unbiased", [True, False])
def test_task1_is_two_minus_ccc_over_valid_pairs(unbiased):
    pred, ratings, pad = _pairs()
    loss = losses.annotator_ccc_loss(pred, ratings, unbiased=unbiased)
    ref = sum(1 - _ccc_np(pred[..., d][~pad].numpy(), ratings[..., d][~pad].numpy(), int(unbiased)) for d in (0, 1))
    assert float(loss) == pytest.approx(ref, rel=1e-12)


def test_task1_gradients_ignore_padding_and_pass_gradcheck():
    pred, ratings, pad = _pairs(1)
    x = torch.where(torch.isnan(pred), 0.0, pred).requires_grad_(True)

    def f(x):
        return losses.annotator_ccc_loss(torch.where(pad[..., None], float("nan"), x), ratings)

    f(x).backward()
    assert (x.grad[pad] == 0).all() and torch.isfinite(x.grad).all() and x.grad[~pad].abs().sum() > 0
    assert torch.autograd.gradcheck(f, (x.detach().requires_grad_(True),))


def test_baseline_loss_is_soft_target_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(5, 4, 4, generator=g, dtype=torch.float64)
    target = target / target.sum((1, 2), keepdim=True)
    p = torch.softmax(logits.detach(), -1).numpy()
    ref = -(target.reshape(5, 16).numpy() * np.log(p)).sum(1).mean()
    assert losses.baseline_loss(logits, target).item() == pytest.approx(ref, rel=1e-12)
    assert torch.autograd.gradcheck(lambda lg: losses.baseline_loss(lg, target), (logits,))
    with pytest.raises(ValueError, match="logits must have shape"):
        losses.baseline_loss(logits[:, :9], target)


def test_predicted_distribution_equals_kdekit_pipeline_and_locates_mass():
    g = torch.Generator().manual_seed(3)
    # utterance 0: annotators agree on high activation / low valence; utterance 1: low / high; padding in row 1
    pred = torch.tensor([[[0.7, -0.6], [0.65, -0.7], [0.75, -0.55]],
                         [[-0.6, 0.6], [-0.7, 0.7], [float("nan"), float("nan")]]], dtype=torch.float64)
    p = losses.predicted_distribution(pred, 4, histogram="soft", grid=64, generator=torch.Generator().manual_seed(0))
    obs = kdekit.pseudo_observations(pred, n=200, generator=torch.Generator().manual_seed(0))
    ref = kdekit.points_to_distribution(obs[..., 0], obs[..., 1], k=4, grid=64, sharpness=8.0,
                                        clip_negative=True).probs
    torch.testing.assert_close(p, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    assert p[0].argmax() == 3 * 4 + 0 and p[1].argmax() == 0 * 4 + 3  # rows = activation, columns = valence
    hard = losses.predicted_distribution(pred, 4, histogram="hard", grid=64, generator=g)
    assert hard[0, 3, 0] > p[0, 3, 0]  # the hard histogram is sharper than the sharpness-8 soft one


def test_task2_is_differentiable_and_half_precision_close_to_float32():
    g = torch.Generator().manual_seed(4)
    pred = (torch.rand(8, 5, 2, generator=g) * 1.2 - 0.6).requires_grad_(True)
    target = torch.rand(8, 4, 4, generator=g) ** 3
    target = target / target.sum((1, 2), keepdim=True)
    loss = losses.diffkde_loss(pred, target, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a step along -grad lowers the loss (same pseudo-observation draws)
    with torch.no_grad():
        stepped = pred - 0.05 * pred.grad / pred.grad.abs().max()
    assert losses.diffkde_loss(stepped, target, generator=torch.Generator().manual_seed(0)) < loss
    p32 = losses.predicted_distribution(pred.detach(), 4, generator=torch.Generator().manual_seed(1))
    p16 = losses.predicted_distribution(pred.detach(), 4, dtype=torch.float16,
                                        generator=torch.Generator().manual_seed(1))
    assert p16.dtype == torch.float32  # returned in pred's dtype
    torch.testing.assert_close(p16, p32, atol=2e-2, rtol=0)  # inputs rounded to float16 (~1e-3 of the range)
    ce = losses.distribution_cross_entropy(p32.double(), target.double())
    assert loss.item() == pytest.approx(float(losses.diffkde_loss(
        pred.detach(), target, generator=torch.Generator().manual_seed(0))), rel=1e-6)
    assert ce.shape == (8,)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="pred must have shape"):
        losses.annotator_ccc_loss(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="ratings has shape"):
        losses.annotator_ccc_loss(torch.zeros(3, 2, 2), torch.zeros(3, 3, 2))
    with pytest.raises(ValueError, match="target must have shape"):
        losses.diffkde_loss(torch.zeros(3, 2, 2), torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="histogram must be"):
        losses.predicted_distribution(torch.zeros(3, 2, 2), histogram="kde")
