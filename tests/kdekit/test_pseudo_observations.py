"""kdekit.pseudo_observations (the seed's upsampling) on every backend: the cpp kernel ``kdekit::pseudo_observations``
(partial selection) chooses the same annotator subsets as the torch path's stable argsort for the same generator
state, with the same gradients; ties go to the lower annotator index; gradients stay finite where the ratings'
spread is 0 (one annotator, or all agree)."""
import pytest
import torch

import kdekit
from kdekit import _ext

pytestmark = pytest.mark.skipif(not _ext.LOADED, reason=f"kdekit._C not built: {_ext.LOAD_ERROR}")
ops = torch.ops.kdekit
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-14), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.float16: dict(rtol=1e-2, atol=2e-3)}


def _ratings(U, A, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    r = (2 * torch.rand(U, A, 2, generator=g, dtype=torch.float64) - 1).to(dtype)
    r[0, : A // 2] = float("nan")  # missing annotators
    if U > 1:
        r[1] = float("nan")  # no annotator at all
    return r


def _observations(backend, ratings, n, seed, grad):
    r = ratings.detach().clone().requires_grad_()
    with kdekit.use_backend(backend):
        obs = kdekit.pseudo_observations(r, n, generator=torch.Generator().manual_seed(seed))
    (gr,) = torch.autograd.grad((obs.nan_to_num() * grad).sum(), r)
    return obs, gr


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("A", [1, 2, 8, 24, 25, 32, 33, 300])  # ranks up to 32, buckets above
def test_cpp_equals_torch_for_the_same_generator_state(dtype, A):
    ratings = _ratings(6, A, dtype, seed=A)
    grad = torch.randn(6, 50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    want, want_grad = _observations("torch", ratings, 50, 7, grad)
    got, got_grad = _observations("cpp", ratings, 50, 7, grad)
    torch.testing.assert_close(got, want, equal_nan=True, **TOL[dtype])
    torch.testing.assert_close(got_grad, want_grad, **TOL[dtype])
    assert torch.isfinite(got_grad).all()
    assert torch.isnan(got[1]).all() and torch.isfinite(got[0]).all()


def _stable_argsort_means(ratings, keys, size):
    order = keys.argsort(dim=-1, stable=True)
    A = ratings.shape[1]
    first = (torch.arange(A) < size[..., None]).to(ratings.dtype)
    chosen = torch.zeros_like(first).scatter_(-1, order, first)
    return torch.einsum("una,uad->und", chosen, ratings) / size[..., None].to(ratings.dtype)


@pytest.mark.parametrize("power", [1.0, 0.25, 8.0])  # uniform keys (the band), and skewed ones (the exact fallback)
def test_subset_means_equal_a_stable_argsort_for_any_key_distribution(power):
    g = torch.Generator().manual_seed(11)
    ratings = torch.randn(3, 1500, 2, generator=g, dtype=torch.float64)
    ratings[2, ::3] = float("nan")  # a third of the annotators missing: gathered keys
    valid = torch.isfinite(ratings).all(-1)
    keys = torch.rand(3, 40, 1500, generator=g) ** power
    M = valid.sum(1)
    size = 1 + (torch.rand(3, 40, generator=g) * M[:, None]).floor().long()
    size[:, 0], size[:, 1], size[:, 2] = 1, M // 2, M  # the extremes and the middle
    r = ratings.clone().requires_grad_()
    out = torch.full((3, 40, 2), float("nan"), dtype=torch.float64)
    means = ops.pseudo_observations(r, keys, size, None)[0]
    out.copy_(means)
    ranked = torch.where(valid[:, None, :], keys, 2.0)  # missing annotators after every valid one
    r0 = ratings.nan_to_num(0.0).requires_grad_()
    want = _stable_argsort_means(r0, ranked, size)
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-15)
    grad = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    (got_grad,) = torch.autograd.grad((means * grad).sum(), r)
    (want_grad,) = torch.autograd.grad((want * grad).sum(), r0)
    torch.testing.assert_close(got_grad, want_grad * valid[..., None], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("A", [30, 1000])
def test_a_non_finite_gradient_reaches_only_the_annotators_its_draw_chose(A):
    g = torch.Generator().manual_seed(5)
    ratings = torch.randn(2, A, 2, generator=g, dtype=torch.float64)
    keys = torch.rand(2, 6, A, generator=g)
    size = torch.full((2, 6), A // 3)
    grad = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    grad[0, 2, 0] = float("inf")
    _, pivots = ops.pseudo_observations(ratings, keys, size, None)
    out = ops.pseudo_observations_backward(grad, ratings, keys, size, None, pivots)
    chosen = torch.zeros(A, dtype=torch.bool)
    chosen[keys[0, 2].argsort(stable=True)[: A // 3]] = True  # the annotators draw (0, 2) chose
    assert torch.isinf(out[0, chosen, 0]).all()
    assert torch.isfinite(out[0, ~chosen]).all() and torch.isfinite(out[0, :, 1]).all() and torch.isfinite(out[1]).all()


@pytest.mark.parametrize("A", [6, 40])
def test_ties_go_to_the_lower_index(A):
    g = torch.Generator().manual_seed(A)
    ratings = torch.randn(3, A, 2, generator=g, dtype=torch.float64)
    keys = (torch.randint(0, 3, (3, 20, A), generator=g) / 4.0).float()  # many equal keys
    size = torch.randint(1, A + 1, (3, 20), generator=g)
    out = torch.full((3, 20, 2), float("nan"), dtype=torch.float64)
    out.copy_(ops.pseudo_observations(ratings, keys, size, None)[0])
    torch.testing.assert_close(out, _stable_argsort_means(ratings, keys, size), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("with_noise", [False, True])
def test_gradcheck_pseudo_observations(with_noise):
    """Subset means alone, and with the noise (its scale from the ratings' spread) and the clamp to [-1, 1]."""
    g = torch.Generator().manual_seed(3)
    ratings = torch.randn(2, 30, 2, generator=g, dtype=torch.float64).requires_grad_()
    keys = torch.rand(2, 7, 30, generator=g)
    size = torch.randint(1, 4 if with_noise else 31, (2, 7), generator=g)  # small subsets: means beyond [-1, 1]
    noise = torch.rand(2, 7, 2, generator=g) if with_noise else None
    obs = ops.pseudo_observations(ratings, keys, size, noise)[0]
    if with_noise:
        assert (obs.abs() == 1).any() and (obs.abs() < 1).any()  # both sides of the clamp are checked
    assert torch.autograd.gradcheck(lambda r: ops.pseudo_observations(r, keys, size, noise)[0], (ratings,))


@pytest.mark.parametrize("with_noise", [False, True])
def test_opcheck(with_noise):
    """torch.library.opcheck of the op (schema, fake kernel, its C++ autograd registration, AOT dispatch)."""
    g = torch.Generator().manual_seed(4)
    ratings = torch.randn(3, 9, 2, generator=g, dtype=torch.float64).requires_grad_()
    keys = torch.rand(3, 5, 9, generator=g)
    size = torch.randint(1, 10, (3, 5), generator=g)
    noise = torch.rand(3, 5, 2, generator=g) if with_noise else None
    torch.library.opcheck(ops.pseudo_observations, (ratings, keys, size, noise))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_zero_spread_gives_finite_gradients(backend):
    """One annotator or unanimous annotators: no noise (sd 0) and finite gradients (sqrt's slope at 0 is not used)."""
    ratings = torch.tensor([[[0.3, -0.2]], [[0.5, 0.5]]], dtype=torch.float64)
    unanimous = torch.tensor([[[0.1, 0.4]] * 5], dtype=torch.float64)
    for r in (ratings, unanimous):
        r = r.clone().requires_grad_()
        with kdekit.use_backend(backend):
            obs = kdekit.pseudo_observations(r, 30, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(obs, r.detach()[:, :1].expand_as(obs), rtol=0, atol=1e-11)
        (gr,) = torch.autograd.grad(obs.sum(), r)
        assert torch.isfinite(gr).all()
        torch.testing.assert_close(gr.sum(1), torch.full_like(gr.sum(1), 30.0))


def test_bad_arguments_name_the_argument():
    r = torch.randn(2, 5, 2, dtype=torch.float64)
    keys = torch.rand(2, 4, 5)
    size = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="keys must be float32"):
        ops.pseudo_observations(r, keys.double(), size, None)
    with pytest.raises(RuntimeError, match="size must be in"):
        ops.pseudo_observations(r, keys, size * 6, None)
    with pytest.raises(RuntimeError, match="ratings must be"):
        ops.pseudo_observations(r[..., :1], keys, size, None)
    with pytest.raises(RuntimeError, match="keys must be >= 0"):
        ops.pseudo_observations(r, -keys, size, None)
    with pytest.raises(RuntimeError, match="noise must be"):
        ops.pseudo_observations(r, keys, size, torch.rand(2, 4, 3))
    with pytest.raises(RuntimeError, match="noise must be float32"):
        ops.pseudo_observations(r, keys, size, torch.rand(2, 4, 2, dtype=torch.float64))


@pytest.mark.parametrize("default", [torch.float64, torch.float16])
def test_draws_are_float32_whatever_the_default_dtype(default):
    """A float64 (or float16) default dtype changes neither the draws nor the backend's choice: the kernel's float32
    keys and noise are what the torch path draws too."""
    ratings = _ratings(5, 9, torch.float32, seed=3)
    want = {name: _observations(name, ratings, 40, 2, torch.ones(5, 40, 2))[0] for name in ("torch", "cpp")}
    old = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        got = {name: _observations(name, ratings, 40, 2, torch.ones(5, 40, 2))[0] for name in ("torch", "cpp")}
    finally:
        torch.set_default_dtype(old)
    for name in ("torch", "cpp"):
        torch.testing.assert_close(got[name], want[name], equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(got["cpp"], got["torch"], equal_nan=True, **TOL[torch.float32])
