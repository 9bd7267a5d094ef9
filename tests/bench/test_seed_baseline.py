"""The seed-style benchmark baseline (bench/baselines/seed.py) computes what kde_diffusion and kdekit compute.

The benchmark ratios of W1/W2 compare like with like only if the baseline's maths is right: its density equals
``kde_diffusion.kde2d`` (independent oracle) where that converges, and its pooled tables equal kdekit's torch path
on the same pseudo-observations (float32 training configuration within 1e-4, float64 label configuration within
1e-10).
"""
import numpy as np
import pytest
import torch
from kde_diffusion import kde2d as kde_diffusion_kde2d
from scipy.spatial.distance import jensenshannon
from torchmetrics.functional import concordance_corrcoef

from bench.baselines import seed
from kdekit import diffusion_kde2d, points_to_distribution, pool_density

UNIT_SQUARE = ((-1.0, 1.0), (-1.0, 1.0))


def likert_ratings(batch, raters, gen, dtype=torch.float64):
    """(batch, raters) activation and valence ratings on {-1, -1/2, 0, 1/2, 1} around a random centre."""
    out = []
    for _ in range(2):
        centre = torch.rand(batch, 1, generator=gen, dtype=dtype) * 1.4 - 0.7
        raw = (centre + 0.35 * torch.randn(batch, raters, generator=gen, dtype=dtype)).clamp(-1, 1)
        out.append(torch.round(raw * 2) / 2)
    return out


def seed_points(batch, raters, gen, dtype=torch.float64):
    a, v = likert_ratings(batch, raters, gen, dtype)
    return seed.pseudo_observations(a, v, generator=gen)


def test_pseudo_observations_stay_within_subset_means_plus_noise():
    gen = torch.Generator().manual_seed(0)
    a, v = likert_ratings(6, 9, gen)
    a[:, 7:] = torch.nan  # two missing annotators per item
    v[:, 7:] = torch.nan
    x, y = seed.pseudo_observations(a, v, generator=gen)
    assert x.shape == y.shape == (6, seed.PSEUDO_OBSERVATIONS)
    for obs, r in ((x, a[:, :7]), (y, v[:, :7])):
        half = 0.5 * r.std(-1, keepdim=True) + 1e-12
        lo = (r.amin(-1, keepdim=True) - half).clamp(min=-1)
        hi = (r.amax(-1, keepdim=True) + half).clamp(max=1)
        assert torch.isfinite(obs).all()
        assert ((obs >= lo - 1e-12) & (obs <= hi + 1e-12)).all()
    # identical ratings: no spread, so every pseudo-observation is that rating (NaN padding ignored)
    same = torch.tensor([[0.5, 0.5, 0.5, torch.nan]], dtype=torch.float64)
    xs, ys = seed.pseudo_observations(same, -same, generator=gen)
    torch.testing.assert_close(xs, torch.full_like(xs, 0.5), atol=1e-11, rtol=0)
    torch.testing.assert_close(ys, torch.full_like(ys, -0.5), atol=1e-11, rtol=0)


def test_kde2d_matches_kde_diffusion_float64():
    gen = torch.Generator().manual_seed(1)
    x, y = seed_points(12, 8, gen)
    density, _ = seed.kde2d(x, y, 64, soft=False)
    compared = 0
    for b in range(len(x)):
        try:
            ref, _, _ = kde_diffusion_kde2d(x[b].numpy(), y[b].numpy(), 64, UNIT_SQUARE)
        except ValueError:
            continue
        ref = np.where(ref < 0, np.finfo(np.float64).eps, ref)  # the seed clips negatives to eps
        np.testing.assert_allclose(density[b].numpy(), ref, rtol=1e-8, atol=1e-10 * ref.max())
        compared += 1
    assert compared >= 10


def test_kde2d_raises_for_the_whole_batch_if_one_item_is_unbracketed():
    gen = torch.Generator().manual_seed(2)
    for _ in range(40):  # uniform point sets have no root on [0, 0.1] 70-90% of the time
        u = torch.rand(2, 200, generator=gen, dtype=torch.float64) * 2 - 1
        try:
            kde_diffusion_kde2d(u[0].numpy(), u[1].numpy(), 64, UNIT_SQUARE)
        except ValueError:
            break
    else:
        pytest.fail("no unbracketed uniform set found")
    good_x, good_y = seed_points(1, 8, gen)
    x = torch.cat([good_x, u[:1]])
    y = torch.cat([good_y, u[1:]])
    with pytest.raises(seed.BracketError):
        seed.kde2d(x, y, 64, soft=False)


def test_kde_probability_redraws_the_batch_up_to_15_times(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    a, v = likert_ratings(3, 6, gen)
    real_kde2d = seed.kde2d
    calls = []

    def failing_then_real(x, y, *args, fail_first, **kwargs):
        calls.append(x.clone())
        if len(calls) <= fail_first:
            raise seed.BracketError("forced")
        return real_kde2d(x, y, *args, **kwargs)

    monkeypatch.setattr(seed, "kde2d", lambda *args, **kw: failing_then_real(*args, fail_first=3, **kw))
    table = seed.kde_probability(a, v, grid=32, soft=False, generator=gen)
    assert len(calls) == 4
    assert not torch.equal(calls[0], calls[1])  # each attempt redraws the pseudo-observations
    assert table.shape == (3, 4, 4)
    torch.testing.assert_close(table.sum((-2, -1)), torch.ones(3, dtype=torch.float64))

    calls.clear()
    monkeypatch.setattr(seed, "kde2d", lambda *args, **kw: failing_then_real(*args, fail_first=99, **kw))
    assert seed.kde_probability(a, v, grid=32, soft=False, generator=gen) is None
    assert len(calls) == seed.MAX_ATTEMPTS


def test_training_configuration_matches_kdekit_float32():
    """W2: soft histogram (sharpness 8), grid 64, float32, pooled 4x4, same pseudo-observations for both."""
    gen = torch.Generator().manual_seed(4)
    pa = torch.tanh(torch.rand(16, 1, generator=gen) * 1.4 - 0.7 + 0.3 * torch.randn(16, 8, generator=gen))
    pv = torch.tanh(torch.rand(16, 1, generator=gen) * 1.4 - 0.7 + 0.3 * torch.randn(16, 8, generator=gen))
    x, y = seed.pseudo_observations(pa, pv, generator=gen)
    ours = points_to_distribution(x, y, k=4, grid=64, sharpness=8.0, clip_negative=True)
    compared = 0
    for b in range(len(x)):  # one item per seed batch: a batch with one unbracketed item raises as a whole
        try:
            density, _ = seed.kde2d(x[b : b + 1], y[b : b + 1], 64, soft=True, sharpness=8.0)
        except seed.BracketError:
            continue
        if not ours.converged[b]:
            continue
        assert density.dtype == torch.float32
        torch.testing.assert_close(seed.pool(density, 4)[0], ours.probs[b], atol=1e-4, rtol=0)
        compared += 1
    assert compared >= 12


@pytest.mark.parametrize("grid, items", [(64, 8), (512, 2)])
def test_label_configuration_matches_kdekit_float64(grid, items):
    """W1: hard histogram, float64, pooled 4x4."""
    gen = torch.Generator().manual_seed(5 + grid)
    x, y = seed_points(items, 10, gen)
    density, t_star = seed.kde2d(x, y, grid, soft=False)
    ours = diffusion_kde2d(x, y, grid_size=grid, limits=UNIT_SQUARE, clip_negative=True, implicit_grad=False)
    assert ours.converged.all()
    torch.testing.assert_close(t_star, ours.t, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(seed.pool(density, 4), pool_density(ours.density, 4), atol=1e-10, rtol=0)


def test_training_loss_backward_gives_finite_gradients():
    gen = torch.Generator().manual_seed(6)
    pa = torch.tanh(torch.randn(4, 8, generator=gen) * 0.3).requires_grad_(True)
    pv = torch.tanh(torch.randn(4, 8, generator=gen) * 0.3 + 0.2).requires_grad_(True)
    e = torch.rand(4, 16, generator=gen)
    target = (e / e.sum(-1, keepdim=True)).view(4, 4, 4)
    loss = seed.training_loss(pa, pv, target, grid=64, generator=gen)
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (pa.grad, pv.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_seed_metric_definitions():
    rng = np.random.default_rng(7)
    gt = rng.uniform(-1, 1, 300)
    pred = 0.6 * gt + 0.3 * rng.normal(size=300)
    expected = concordance_corrcoef(torch.from_numpy(pred), torch.from_numpy(gt)).item()  # unbiased moments
    assert seed.ccc(pred, gt) == pytest.approx(expected, rel=1e-10)

    p = rng.dirichlet(np.ones(16), size=20)
    q = rng.dirichlet(np.ones(16), size=20)
    np.testing.assert_allclose(seed.jsd(p, q), jensenshannon(p, q, axis=1) ** 2, rtol=1e-10)
    p[:, 0], q[:, 1] = 0.0, 0.0
    p_before, q_before = p.copy(), q.copy()
    assert np.isfinite(seed.jsd(p, q)).all()
    np.testing.assert_array_equal(p, p_before)  # zeros replaced on copies, not in the caller's arrays
    np.testing.assert_array_equal(q, q_before)
