"""Every public kdekit op on a CUDA device, under each backend that runs there (``cuda``, ``triton``, ``torch`` and the
automatic choice) and every dtype: values, gradients and per-item statuses against the CPU (float64 torch references,
and the CPU path at the op's own dtype for the KDE pipelines).

Marked ``gpu`` (``pytest -m gpu``); skipped without a CUDA device. Triton runs compiled here: the kernels under the
interpreter are covered by the CPU tests, so ``TRITON_INTERPRET=1`` leaves ``triton`` out. ``KDEKIT_TEST_DEVICE=cpu``
runs the same checks with the CPU backends (``cpp``, interpreted ``triton``): a dry run of this file without a GPU.
"""
import contextlib
import os

import numpy as np
import pytest
import scipy.fft
import torch

import kdekit
from kdekit import KDEStatus
from kdekit.nn import DiffusionKDE2d, KDECrossEntropyLoss

DEVICE = os.environ.get("KDEKIT_TEST_DEVICE", "cuda")
ON_GPU = DEVICE == "cuda"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("nan_filled_buffers"),
              pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device")]

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
UNIT = ((-1.0, 1.0), (-1.0, 1.0))


def _device_backends():
    """Backends that run on DEVICE, plus "auto" (kdekit's own choice)."""
    runs_here = ("torch", "cuda", "triton") if ON_GPU else ("torch", "cpp", "triton")
    names = [b for b in runs_here if kdekit.backends()[b][0] and not (b == "triton" and ON_GPU and INTERPRETED)]
    return names + ["auto"]


BACKENDS = _device_backends()


def _backend(name):
    return contextlib.nullcontext() if name == "auto" else kdekit.use_backend(name)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _close(actual, expected, tol, what=""):
    """``actual`` (any device/dtype) ~ float64 ``expected`` relative to expected's largest magnitude."""
    assert actual.device.type == torch.device(DEVICE).type, what
    scale = expected.abs().max().clamp(min=1e-300)
    torch.testing.assert_close(actual.detach().cpu().double() / scale, expected.detach().double() / scale,
                               equal_nan=True, msg=lambda m: f"{what}: {m}", **tol)


def _value_and_grads(fn, inputs, on_device, backend="torch", seed=7):
    """fn's output and the gradients of a fixed random weighting of it, inputs copied to the device (or CPU) as
    leaves. ``inputs``: tensors, or None for an argument passed as None."""
    leaves = [None if t is None else t.detach().clone().to(DEVICE if on_device else "cpu").requires_grad_(
        t.is_floating_point()) for t in inputs]
    with _backend(backend if on_device else "torch"):
        out = fn(*leaves)
    weight = torch.rand(out.shape, generator=_gen(seed), dtype=torch.float64).to(out.device)
    (out.double() * weight).sum().backward()
    return out, [None if t is None or not t.is_floating_point() else t.grad for t in leaves]


def _compare(fn, inputs, dtype, backend, tol, reference_dtype=torch.float64, grad_tol=None):
    """fn on DEVICE under ``backend`` at ``dtype`` against fn on the CPU torch path at ``reference_dtype`` (same
    rounded inputs): output dtype, values and every gradient."""
    rounded = [None if t is None else t.to(dtype) if t.is_floating_point() else t for t in inputs]
    out, grads = _value_and_grads(fn, rounded, True, backend)
    ref_in = [None if t is None else t.to(reference_dtype) if t.is_floating_point() else t for t in rounded]
    ref, ref_grads = _value_and_grads(fn, ref_in, False)
    assert out.dtype == dtype
    _close(out, ref, tol, "value")
    for i, (g, rg) in enumerate(zip(grads, ref_grads)):
        if rg is not None:
            assert g is not None and g.dtype == dtype, f"gradient {i}"
            _close(g, rg, grad_tol or tol, f"gradient {i}")


def _points(B, N, seed, spread=0.4):
    g = _gen(seed)
    centre = torch.rand(B, 1, 2, generator=g, dtype=torch.float64) - 0.5
    pts = (centre + spread * torch.randn(B, N, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return pts[..., 0].contiguous(), pts[..., 1].contiguous()


# ------------------------------------------------------------------------------------------------ histograms


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_histogram2d(backend, dtype, tol):
    x, y = _points(3, 37, seed=1)
    w = torch.rand(3, 37, generator=_gen(2), dtype=torch.float64) + 0.2
    mask = torch.rand(3, 37, generator=_gen(3)) > 0.2
    rng = torch.tensor([[[-1.0, 1.0], [-0.8, 1.1]]], dtype=torch.float64).expand(3, 2, 2)

    def fn(x, y, w):
        return kdekit.soft_histogram2d(x, y, 20, rng.to(x.device), 8.0, weights=w, mask=mask.to(x.device))

    _compare(fn, [x, y, w], dtype, backend, tol[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_histogram2d_equals_numpy_with_weight_gradient(backend, dtype, tol):
    g = np.random.default_rng(4)
    x, y = g.uniform(-1.2, 1.2, (4, 300)), g.uniform(-1.2, 1.2, (4, 300))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    x[0, 7] = np.nan
    w = g.integers(1, 4, (4, 300)).astype(np.float64)  # small integers: sums exact in every dtype
    x, y, w = (torch.tensor(a).to(dtype) for a in (x, y, w))
    with _backend(backend):
        out = kdekit.hard_histogram2d(x.to(DEVICE), y.to(DEVICE), 16, UNIT, weights=w.to(DEVICE))
    assert out.dtype == dtype and out.device.type == torch.device(DEVICE).type
    for b in range(4):
        ref = np.histogram2d(x[b].double().numpy(), y[b].double().numpy(), bins=16, range=UNIT,
                             weights=w[b].double().numpy())[0]
        np.testing.assert_array_equal(out[b].cpu().double().numpy(), ref)
    _compare(lambda w_: kdekit.hard_histogram2d(x.to(w_.device), y.to(w_.device), 16, UNIT, weights=w_), [w],
             dtype, backend, tol[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_histograms_1d(dtype, tol):
    x, _ = _points(2, 41, seed=5)
    _compare(lambda x: kdekit.soft_histogram1d(x, 12, (-1.0, 1.0), 6.0), [x], dtype, "auto", tol[dtype])
    out = kdekit.hard_histogram1d(x.to(dtype).to(DEVICE), 12, (-1.0, 1.0))
    for b in range(2):
        ref = np.histogram(x[b].to(dtype).double().numpy(), 12, (-1.0, 1.0))[0]
        np.testing.assert_array_equal(out[b].cpu().double().numpy(), ref)


# ------------------------------------------------------------------------------------------------ DCT and pooling


@pytest.mark.parametrize("n", [8, 64, 1024])  # 1024: the FFT form
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct_matches_scipy(n, dtype):
    x = torch.randn(3, n, n, generator=_gen(n), dtype=torch.float64)
    xd = x.to(dtype).to(DEVICE)
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    for ours, theirs in ((kdekit.dct, scipy.fft.dct), (kdekit.idct, scipy.fft.idct)):
        ref = torch.from_numpy(theirs(x.to(dtype).double().numpy(), type=2, axis=-1))
        _close(ours(xd), ref, dict(rtol=0, atol=rtol), ours.__name__)
    for ours, theirs in ((kdekit.dct2, scipy.fft.dctn), (kdekit.idct2, scipy.fft.idctn)):
        ref = torch.from_numpy(theirs(x.to(dtype).double().numpy(), type=2, axes=(-2, -1)))
        _close(ours(xd), ref, dict(rtol=0, atol=rtol), ours.__name__)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_density(dtype, tol):
    d = torch.rand(3, 16, 16, generator=_gen(6), dtype=torch.float64)
    _compare(lambda d: kdekit.pool_density(d, 4), [d], dtype, "auto", tol[dtype])


# ------------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_and_pearson(backend, dtype, unbiased, tol):
    g = _gen(8)
    x = torch.randn(5, 300, generator=g, dtype=torch.float64)
    y = 0.6 * x + 0.5 * torch.randn(5, 300, generator=g, dtype=torch.float64) + 0.3
    rounded = [t.to(dtype) for t in (x, y)]
    with _backend(backend):  # no gradient: the kernels
        out = kdekit.ccc(*(t.to(DEVICE) for t in rounded), dim=-1, unbiased=unbiased)
    ref = kdekit.ccc(*(t.double() for t in rounded), dim=-1, unbiased=unbiased)
    assert out.dtype == dtype
    _close(out, ref, tol[dtype], "ccc without gradient")
    _compare(lambda a, b: kdekit.ccc(a, b, dim=-1, unbiased=unbiased), [x, y], dtype, backend, tol[dtype])
    _compare(lambda a, b: kdekit.pearson(a, b, dim=-1), [x, y], dtype, backend, tol[dtype])
    mask = torch.rand(5, 300, generator=g) > 0.3
    _compare(lambda a, b: kdekit.ccc(a, b, dim=-1, mask=mask.to(a.device), unbiased=unbiased), [x, y], dtype,
             backend, tol[dtype])


def test_ccc_moments_streaming_equals_one_call():
    g = _gen(9)
    x, y = (torch.randn(100, 2, generator=g, dtype=torch.float64).to(DEVICE) for _ in range(2))
    moments = kdekit.CCCMoments(dim=0)
    for s in range(0, 100, 30):
        moments.update(x[s:s + 30], y[s:s + 30])
    _close(moments.compute(), kdekit.ccc(x, y, dim=0).cpu(), dict(rtol=1e-10, atol=1e-12))


def _tables(B, K, seed, zeros=0.1):
    g = _gen(seed)
    e = -torch.log(torch.rand(B, K, generator=g, dtype=torch.float64))
    e = torch.where(torch.rand(B, K, generator=g) < zeros, 0.0, e)
    e[:, 0] += 1e-3
    return e / e.sum(-1, keepdim=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_divergences(backend, dtype, kind, tol):
    fn = getattr(kdekit, kind)
    p, q = _tables(6, 700, seed=10, zeros=0.0), _tables(6, 700, seed=11, zeros=0.0)
    rounded = [t.to(dtype) for t in (p, q)]
    with _backend(backend):  # no gradient: the kernels
        out = fn(*(t.to(DEVICE) for t in rounded))
    _close(out, fn(*(t.double() for t in rounded)), tol[dtype], f"{kind} without gradient")
    _compare(fn, [p, q], dtype, backend, tol[dtype])
    if kind != "kl":  # zero cells (kl is inf where q = 0 < p)
        _compare(fn, [_tables(6, 16, seed=12), _tables(6, 16, seed=13)], dtype, backend, tol[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["kl", "jsd"])
def test_divergence_rows_with_bad_entries_are_nan_and_raise(backend, dtype, kind):
    fn = getattr(kdekit, kind)
    p, q = _tables(5, 9, seed=14).to(dtype), _tables(5, 9, seed=15).to(dtype)
    p[1, 2], q[2, 3], p[3, 0] = float("inf"), float("nan"), -0.1  # rows 1-3 bad; 0 and 4 fine
    with _backend(backend):
        out = fn(p.to(DEVICE), q.to(DEVICE), validate=False).cpu()
        with pytest.raises(ValueError, match="must be finite and non-negative"):
            fn(p.to(DEVICE), q.to(DEVICE))
    assert out[1:4].isnan().all()
    ref = fn(p[[0, 4]].double(), q[[0, 4]].double())
    torch.testing.assert_close(out[[0, 4]].double(), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ diffusion KDE


def _kde_batch():
    """(x, y, lengths) float64: clusters (solved by brentq), uniform points (fallback rules), Likert ties, identical
    points, two points, a point outside the limits only, a NaN point and an empty item."""
    g = np.random.default_rng(16)
    sets = [np.clip(g.normal(g.uniform(-0.5, 0.5, (2, 1)), 0.2, (2, 60)), -1, 1) for _ in range(4)]
    sets += [g.uniform(-1, 1, (2, 8)) for _ in range(2)]
    sets += [g.choice([-1, -0.5, 0, 0.5, 1], (2, 30)) for _ in range(2)]
    sets += [np.full((2, 20), 0.25), np.array([[0.1, -0.4], [0.3, 0.2]]), np.array([[3.0], [0.0]]),
             np.array([[0.1, np.nan, 0.3], [0.0, 0.1, 0.2]]), np.zeros((2, 0))]
    n = max(s.shape[1] for s in sets)
    x, y = torch.zeros(len(sets), n, dtype=torch.float64), torch.zeros(len(sets), n, dtype=torch.float64)
    for b, s in enumerate(sets):
        x[b, :s.shape[1]], y[b, :s.shape[1]] = torch.from_numpy(s[0]), torch.from_numpy(s[1])
    return x, y, torch.tensor([s.shape[1] for s in sets])


KDE_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=2e-4, atol=2e-5),
           torch.float16: dict(rtol=1e-2, atol=2e-3), torch.bfloat16: dict(rtol=5e-2, atol=1e-2)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("limits,grid,pool,clip", [(UNIT, 64, None, False), (None, 128, None, True),
                                                    (UNIT, 512, 4, False)])
def test_diffusion_kde2d_hard_equals_cpu(backend, dtype, limits, grid, pool, clip):
    x, y, lengths = _kde_batch()
    x, y = x.to(dtype), y.to(dtype)
    kw = dict(grid_size=grid, limits=limits, lengths=lengths, clip_negative=clip, pool=pool)
    with _backend(backend):
        res = kdekit.diffusion_kde2d(x.to(DEVICE), y.to(DEVICE), **{**kw, "lengths": lengths.to(DEVICE)})
    with kdekit.use_backend("torch"):
        ref = kdekit.diffusion_kde2d(x, y, **kw)
    assert torch.equal(res.status.cpu(), ref.status)
    expected = {KDEStatus.BRENTQ, KDEStatus.NO_POINTS, KDEStatus.NON_FINITE_INPUT}
    assert expected | ({KDEStatus.NO_POINTS_IN_LIMITS} if limits else set()) <= set(ref.status.tolist())
    tol = KDE_TOL[dtype]
    torch.testing.assert_close(res.t.cpu(), ref.t, **tol)
    torch.testing.assert_close(res.bandwidth.cpu(), ref.bandwidth, **tol)
    scale = ref.density.abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(res.density.cpu() / scale, ref.density / scale, **tol)
    assert res.density.dtype == dtype and torch.isfinite(res.density).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_points_to_distribution_and_loss_equal_cpu_values_and_gradients(backend, dtype):
    """The training loss: soft-histogram KDE with the implicit bandwidth gradient, pooled, cross-entropy; device vs
    the CPU path at the same dtype (and float64)."""
    x, y = _points(6, 40, seed=17, spread=0.3)
    target = torch.softmax(torch.randn(6, 16, generator=_gen(18), dtype=torch.float64), -1).view(6, 4, 4)

    def loss(x, y):
        probs = kdekit.points_to_distribution(x, y, k=4, grid=64).probs
        # one eps for every dtype (float16 tables would raise the default 1e-8 to 6.1e-5): the same function
        return KDECrossEntropyLoss(eps=1e-4)(probs, target.to(device=probs.device, dtype=probs.dtype)).reshape(1)

    def table(x, y):
        return kdekit.points_to_distribution(x, y, k=4, grid=64).probs

    reference_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    for fn in (table, loss):
        _compare(fn, [x, y], dtype, backend, KDE_TOL[dtype], reference_dtype=reference_dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_kde_density_and_t_gradients_equal_cpu(backend):
    x, y, _ = _kde_batch()
    x, y = x[:4, :60], y[:4, :60]  # the clusters: brentq roots, implicit gradients

    def fn(x, y):
        r = kdekit.diffusion_kde2d(x, y, grid_size=32, limits=UNIT, histogram="soft")
        assert (r.status == KDEStatus.BRENTQ).all()
        return torch.cat([r.density.flatten(1), r.t[:, None], r.bandwidth], 1)

    _compare(fn, [x, y], torch.float64, backend, KDE_TOL[torch.float64])


def test_gradcheck_soft_kde_on_device():
    g = _gen(0)
    x, y = ((torch.randn(1, 6, generator=g, dtype=torch.float64) * 0.3).clamp(-0.9, 0.9).to(DEVICE).requires_grad_()
            for _ in range(2))

    def fn(x, y):
        r = kdekit.diffusion_kde2d(x, y, grid_size=16, limits=UNIT, histogram="soft")
        assert (r.status == KDEStatus.BRENTQ).all()
        return r.density, r.t

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("histogram", ["hard", "soft"])
def test_diffusion_kde1d_equals_cpu(dtype, histogram):
    x, _, lengths = _kde_batch()
    x = x.to(dtype)
    kw = dict(grid_size=256, histogram=histogram, lengths=lengths)
    res = kdekit.diffusion_kde1d(x.to(DEVICE), **{**kw, "lengths": lengths.to(DEVICE)})
    with kdekit.use_backend("torch"):
        ref = kdekit.diffusion_kde1d(x, **kw)
    assert torch.equal(res.status.cpu(), ref.status)
    tol = KDE_TOL[dtype]
    torch.testing.assert_close(res.t.cpu(), ref.t, **tol)
    scale = ref.density.abs().amax(1, keepdim=True)
    torch.testing.assert_close(res.density.cpu() / scale, ref.density / scale, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", [False, True])
def test_labels_from_ratings_equal_cpu_for_the_same_observations(backend, clip, monkeypatch):
    """labels_from_ratings on the device equals the CPU for the same pseudo-observations (the random streams of the
    two devices differ, so the observations are drawn on the CPU and moved)."""
    g = np.random.default_rng(20)
    ratings = torch.tensor(g.choice([-1, -0.5, 0, 0.5, 1], (7, 9, 2)))
    ratings[1, 4:] = float("nan")  # 4 annotators
    ratings[2] = float("nan")  # none: uniform table
    ratings[3, :, 0] = 0.5  # all agree on activation
    obs = kdekit.pseudo_observations(ratings, 200, _gen(21))
    monkeypatch.setattr("kdekit.labels.pseudo_observations", lambda r, n, generator: obs.to(r.device))
    with _backend(backend):
        res = kdekit.labels_from_ratings(ratings.to(DEVICE), clip_negative=clip)
    with kdekit.use_backend("torch"):
        ref = kdekit.labels_from_ratings(ratings, clip_negative=clip)
    assert torch.equal(res.status.cpu(), ref.status)
    torch.testing.assert_close(res.probs.cpu(), ref.probs, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(res.probs.sum((1, 2)).cpu(), torch.ones(7, dtype=torch.float64))


def test_pseudo_observations_on_device_are_subset_means_within_the_noise():
    ratings = torch.tensor(np.random.default_rng(22).choice([-1, -0.5, 0, 0.5, 1], (4, 6, 2))).to(DEVICE)
    ratings[0, 3:] = float("nan")
    gen = torch.Generator(device=DEVICE).manual_seed(23)
    obs = kdekit.pseudo_observations(ratings, 500, gen)
    again = kdekit.pseudo_observations(ratings, 500, torch.Generator(device=DEVICE).manual_seed(23))
    assert obs.device.type == torch.device(DEVICE).type and obs.shape == (4, 500, 2) and torch.equal(obs, again)
    valid = torch.isfinite(ratings).all(-1)
    for u in range(4):
        r = ratings[u][valid[u]]
        half = 0.5 * r.std(0, correction=1) + 1e-12
        assert ((obs[u] >= r.min(0).values - half - 1e-12) & (obs[u] <= r.max(0).values + half + 1e-12)).all()


def test_module_and_loss_train_on_device():
    """A few Adam steps of a linear layer's raw outputs through DiffusionKDE2d (with upsampling) and the loss: finite
    gradients, parameters on the device, loss decreasing."""
    g = _gen(24)
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


def test_soft_histogram2d_with_more_bins_than_triton_takes_on_the_automatic_backend(tol):
    """grid 256 (bins > TRITON_MAX_BINS): the automatic choice moves to a kernel that takes them."""
    x, y = _points(2, 30, seed=26)
    _compare(lambda x, y: kdekit.soft_histogram2d(x, y, 256, UNIT, 8.0), [x, y], torch.float32, "auto",
             tol[torch.float32])
