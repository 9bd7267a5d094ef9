"""labels_from_ratings / pseudo_observations / points_to_distribution against a per-item kde_diffusion composition
(tests/reference.py) under the torch and cpp backends, and on the device (gpu): labels, pseudo-observations and the
training loss's tables and gradients against the CPU."""
import numpy as np
import pytest
import torch

from kdekit.labels import DistributionLabels, labels_from_ratings, points_to_distribution, pseudo_observations
from kdekit.nn import KDECrossEntropyLoss
from kdekit.ops.diffusion_kde import KDEStatus, diffusion_kde2d
from kdekit.ops.pooling import pool_density
from tests import reference
from tests.kdekit.helpers import (
    DEVICE,
    available,
    clustered_points,
    compare_on_device,
    device_backends,
    device_test,
    dtypes,
    use,
)

HAS_CPP, WHY_NOT_CPP = available("cpp")
pytestmark = pytest.mark.usefixtures("one_thread", "nan_filled_buffers")


def likert_ratings(U: int, seed: int, max_annot: int = 12) -> torch.Tensor:
    """(U, max_annot, 2) Likert ratings in {-1, -0.5, 0, 0.5, 1}, NaN-padded to 3..max_annot annotators."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.rand(U, 1, 2, generator=g, dtype=torch.float64) * 4 + 1
    likert = (latent + torch.randn(U, max_annot, 2, generator=g, dtype=torch.float64) * 0.8).round().clamp(1, 5)
    ratings = (likert - 3) / 2
    n_annot = torch.randint(3, max_annot + 1, (U,), generator=g)
    missing = torch.arange(max_annot)[None, :] >= n_annot[:, None]
    return ratings.masked_fill(missing[..., None], float("nan"))


def test_same_generator_seed_gives_identical_labels(backend):
    ratings = likert_ratings(6, 0)
    a = labels_from_ratings(ratings, grid=64, generator=torch.Generator().manual_seed(7))
    b = labels_from_ratings(ratings, grid=64, generator=torch.Generator().manual_seed(7))
    c = labels_from_ratings(ratings, grid=64, generator=torch.Generator().manual_seed(8))
    assert isinstance(a, DistributionLabels)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.status, b.status)
    assert not torch.equal(a.probs, c.probs)
    assert a.probs.shape == (6, 4, 4) and a.probs.dtype == torch.float64
    torch.testing.assert_close(a.probs.sum((1, 2)), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_labels_match_per_item_kde_diffusion_composition(backend):
    """pseudo_observations -> kde_diffusion.kde2d(n=512, limits=[-1,1]^2) -> numpy block sums, item by item."""
    ratings = likert_ratings(10, 1)
    labels = labels_from_ratings(ratings, k=4, grid=512, generator=torch.Generator().manual_seed(3))
    obs = pseudo_observations(ratings, 200, torch.Generator().manual_seed(3)).numpy()
    compared = 0
    for u in range(ratings.shape[0]):
        expected = reference.pooled_kde2d_kde_diffusion(obs[u, :, 0], obs[u, :, 1], 512, 4, ((-1, 1), (-1, 1)))
        if expected is None:  # kde_diffusion raises
            assert labels.status[u] != KDEStatus.BRENTQ
            continue
        assert labels.status[u] == KDEStatus.BRENTQ
        np.testing.assert_allclose(labels.probs[u].numpy(), expected, rtol=1e-9, atol=1e-12)
        compared += 1
    assert compared >= 8


def test_item_without_annotators_gets_uniform_table_and_status(backend):
    ratings = likert_ratings(3, 2)
    ratings[1] = float("nan")
    labels = labels_from_ratings(ratings, grid=64, generator=torch.Generator().manual_seed(0))
    assert labels.status[1] == KDEStatus.NO_POINTS
    torch.testing.assert_close(labels.probs[1], torch.full((4, 4), 1 / 16, dtype=torch.float64))
    assert (labels.status[[0, 2]] == KDEStatus.BRENTQ).all()


def test_clip_negative_labels_sum_to_one(backend):
    ratings = likert_ratings(4, 3)
    labels = labels_from_ratings(ratings, grid=64, clip_negative=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(labels.probs.sum((1, 2)), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (labels.probs > 0).all()


def test_pseudo_observations_are_noisy_subset_means():
    """Two annotators: every observation is a, b or (a+b)/2 plus noise within 0.5 sd + 1e-12; one annotator: exact."""
    ratings = torch.tensor([[[0.5, -1.0], [-0.5, 0.0]], [[0.25, 0.75], [float("nan"), float("nan")]]])
    obs = pseudo_observations(ratings, 500, torch.Generator().manual_seed(0))
    assert obs.shape == (2, 500, 2)
    a, b = ratings[0, 0], ratings[0, 1]
    means = torch.stack([a, b, (a + b) / 2])  # (3, 2)
    half = 0.5 * ratings[0].std(0) + 1e-12
    dist = (obs[0][:, None, :] - means[None]).abs()  # (500, 3, 2)
    # the same subset for both dimensions
    assert ((dist <= half + 1e-7).all(-1)).any(-1).all()
    counts = ((dist <= half + 1e-7).all(-1)).float().mean(0)
    assert (counts > 0.1).all()  # each subset mean occurs
    torch.testing.assert_close(obs[1], ratings[1, :1].expand(500, 2), rtol=0, atol=1e-11)
    assert (obs.abs() <= 1).all()


def test_pseudo_observations_are_differentiable():
    ratings = (torch.rand(2, 5, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    obs = pseudo_observations(ratings, 50, torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(obs.sum(), ratings)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_points_to_distribution_is_the_pooled_soft_kde_and_differentiable(backend):
    g = torch.Generator().manual_seed(4)
    pts = (torch.randn(5, 20, 2, generator=g, dtype=torch.float64) * 0.3).clamp(-1, 1)
    x = pts[..., 0].clone().requires_grad_()
    y = pts[..., 1].clone().requires_grad_()
    out = points_to_distribution(x, y)
    ref = diffusion_kde2d(x.detach(), y.detach(), grid_size=64, limits=((-1, 1), (-1, 1)), histogram="soft")
    torch.testing.assert_close(out.probs.detach(), pool_density(ref.density, 4), rtol=1e-12, atol=1e-14)
    loss = -(out.probs[:, 0, 0] + 1e-8).log().sum()
    gx, gy = torch.autograd.grad(loss, (x, y))
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0 and gy.abs().sum() > 0


@pytest.mark.skipif(not HAS_CPP, reason=f"backend 'cpp' unavailable: {WHY_NOT_CPP}")
@pytest.mark.parametrize("clip", [False, True])
def test_labels_cpp_equal_torch(clip):
    """Same labels, status and bandwidth from both backends, also for items where kde_diffusion fails (uniform
    fallback tables) and items without annotators."""
    ratings = likert_ratings(12, 5)
    ratings[3] = float("nan")
    ratings[5, :, :] = 0.5  # all annotators agree: identical points
    out = {}
    for backend in ("torch", "cpp"):
        with use(backend):
            out[backend] = labels_from_ratings(ratings, grid=128, clip_negative=clip,
                                               generator=torch.Generator().manual_seed(2))
    cpp, ref = out["cpp"], out["torch"]
    assert torch.equal(cpp.status, ref.status) and torch.equal(cpp.converged, ref.converged)
    assert cpp.status[3] == KDEStatus.NO_POINTS
    torch.testing.assert_close(cpp.probs, ref.probs, rtol=1e-12, atol=1e-14)
    finite = torch.isfinite(ref.bandwidth)
    assert torch.equal(finite, torch.isfinite(cpp.bandwidth))
    torch.testing.assert_close(cpp.bandwidth[finite], ref.bandwidth[finite], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: labels_from_ratings(torch.zeros(3, 4)), "ratings must have 3 dims"),
        (lambda: labels_from_ratings(torch.zeros(3, 4, 3)), r"ratings must be \(U, A, 2\)"),
        (lambda: labels_from_ratings(torch.zeros(0, 4, 2)), "ratings is empty"),
        (lambda: labels_from_ratings(torch.zeros(3, 4, 2), k=3), "k=3 must divide grid=512"),
        (lambda: labels_from_ratings(torch.zeros(3, 4, 2), grid=100), "grid must be a power of two"),
        (lambda: pseudo_observations(torch.zeros(3, 4, 2), n=0), "n must be a positive int"),
        (lambda: pseudo_observations(torch.zeros(3, 4, 2, dtype=torch.int64)), "ratings must have a floating dtype"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

KDE_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=2e-4, atol=2e-5),
           torch.float16: dict(rtol=1e-2, atol=2e-3), torch.bfloat16: dict(rtol=5e-2, atol=1e-2)}


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes())
def test_points_to_distribution_and_loss_on_device_equal_cpu_values_and_gradients(backend, dtype):
    """The training loss: soft-histogram KDE with the implicit bandwidth gradient, pooled, cross-entropy; device vs
    the CPU path at the same dtype (and float64)."""
    x, y = clustered_points(6, 40, seed=17, spread=0.3)
    target = torch.softmax(torch.randn(6, 16, generator=torch.Generator().manual_seed(18), dtype=torch.float64),
                           -1).view(6, 4, 4)

    def loss(x, y):
        probs = points_to_distribution(x, y, k=4, grid=64).probs
        # one eps for every dtype (float16 tables would raise the default 1e-8 to 6.1e-5): the same function
        return KDECrossEntropyLoss(eps=1e-4)(probs, target.to(device=probs.device, dtype=probs.dtype)).reshape(1)

    def table(x, y):
        return points_to_distribution(x, y, k=4, grid=64).probs

    reference_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    for fn in (table, loss):
        compare_on_device(fn, [x, y], dtype, backend, KDE_TOL[dtype], reference_dtype=reference_dtype)


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("clip", [False, True])
def test_labels_from_ratings_on_device_equal_cpu_for_the_same_observations(backend, clip, monkeypatch):
    """labels_from_ratings on the device equals the CPU for the same pseudo-observations (the random streams of the
    two devices differ, so the observations are drawn on the CPU and moved)."""
    g = np.random.default_rng(20)
    ratings = torch.tensor(g.choice([-1, -0.5, 0, 0.5, 1], (7, 9, 2)))
    ratings[1, 4:] = float("nan")  # 4 annotators
    ratings[2] = float("nan")  # none: uniform table
    ratings[3, :, 0] = 0.5  # all agree on activation
    obs = pseudo_observations(ratings, 200, torch.Generator().manual_seed(21))
    monkeypatch.setattr("kdekit.labels.pseudo_observations", lambda r, n, generator: obs.to(r.device))
    with use(backend):
        res = labels_from_ratings(ratings.to(DEVICE), clip_negative=clip)
    with use("torch"):
        ref = labels_from_ratings(ratings, clip_negative=clip)
    assert torch.equal(res.status.cpu(), ref.status)
    torch.testing.assert_close(res.probs.cpu(), ref.probs, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(res.probs.sum((1, 2)).cpu(), torch.ones(7, dtype=torch.float64))


@device_test
def test_pseudo_observations_on_device_are_subset_means_within_the_noise():
    ratings = torch.tensor(np.random.default_rng(22).choice([-1, -0.5, 0, 0.5, 1], (4, 6, 2))).to(DEVICE)
    ratings[0, 3:] = float("nan")
    gen = torch.Generator(device=DEVICE).manual_seed(23)
    obs = pseudo_observations(ratings, 500, gen)
    again = pseudo_observations(ratings, 500, torch.Generator(device=DEVICE).manual_seed(23))
    assert obs.device.type == torch.device(DEVICE).type and obs.shape == (4, 500, 2) and torch.equal(obs, again)
    valid = torch.isfinite(ratings).all(-1)
    for u in range(4):
        r = ratings[u][valid[u]]
        half = 0.5 * r.std(0, correction=1) + 1e-12
        assert ((obs[u] >= r.min(0).values - half - 1e-12) & (obs[u] <= r.max(0).values + half + 1e-12)).all()
