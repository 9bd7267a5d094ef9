"""kl / jsd / tvd against scipy (rel_entr, entropy, jensenshannon; tests/reference.py) under every backend (torch,
cpp, triton) and dtype, with exact zeros, masks and bad entries; the fused kernels called directly (values and
gradients against the float64 torch path, gradcheck, opcheck, repeatability, flags); gradients, validation and
properties; and on the device (gpu): the CUDA kernel against float64 references and the CPU kernel, and the public
ops under each device backend."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kdekit.ops.divergence import divergence_triton, divergence_triton_backward, jsd, kl, tvd
from tests import reference
from tests.kdekit.helpers import (
    DEVICE,
    backend_dtypes,
    backends,
    clustered_points,
    compare_on_device,
    device_backends,
    device_close,
    device_test,
    dtypes,
    kernel_close,
    kernel_dtypes,
    kernel_grads,
    kernel_test,
    requires_cuda,
    use,
)

FUNCTIONS = {"kl": kl, "jsd": jsd, "tvd": tvd}
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # fresh kernel outputs are NaN until written

def distributions(shape, seed, zeros=0.0, dtype=torch.float64):
    """Random probability vectors along the last dim; a fraction ``zeros`` of entries set to exactly 0."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(shape, dtype=torch.float64, generator=g) + 0.05
    if zeros:
        p = p.masked_fill(torch.rand(shape, generator=g) < zeros, 0.0)
        p[..., 0] += 0.1  # every row keeps some mass
    return (p / p.sum(-1, keepdim=True)).to(dtype)


def rows(t):
    return t.reshape(-1, t.shape[-1]).numpy()


@pytest.mark.parametrize("base", [None, 2])
def test_jsd_matches_scipy_jensenshannon_squared(base):
    p, q = distributions((3, 4, 9), seed=0, zeros=0.3), distributions((3, 4, 9), seed=1, zeros=0.3)
    q[0, 0] = p[0, 0]  # identical rows: exactly 0
    p[1, 0, :3] = q[1, 0, :3] = 0.0  # common zeros
    p[1, 0], q[1, 0] = p[1, 0] / p[1, 0].sum(), q[1, 0] / q[1, 0].sum()
    out = jsd(p, q, base=base)
    assert out.shape == (3, 4)
    ref = reference.jsd_items(p, q, base=base)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    assert out[0, 0] == 0


def test_jsd_on_k_by_k_tables():
    p, q = distributions((5, 16), seed=2, zeros=0.4), distributions((5, 16), seed=3, zeros=0.4)
    out = jsd(p.reshape(5, 4, 4), q.reshape(5, 4, 4), dim=(-2, -1))
    np.testing.assert_allclose(out.numpy(), reference.jsd_items(p, q), rtol=0, atol=1e-12)
    assert jsd(p.reshape(5, 4, 4), q.reshape(5, 4, 4), dim=(1, 2), keepdim=True).shape == (5, 1, 1)


def test_kl_matches_scipy():
    p, q = distributions((4, 2, 11), seed=4, zeros=0.3), distributions((4, 2, 11), seed=5)
    out = kl(p, q)
    np.testing.assert_allclose(out.numpy(), reference.kl_items(p, q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), reference.entropy_items(p, q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(kl(p, q, base=2).numpy(), reference.entropy_items(p, q, base=2), rtol=0, atol=1e-12)
    assert torch.isinf(kl(q, p)).any()  # q > 0 where p has zeros
    np.testing.assert_array_equal(torch.isinf(kl(q, p)).numpy(), (rows(p) == 0).any(-1).reshape(4, 2))


def test_tvd_matches_numpy_and_is_not_the_seed_squared_l2():
    p, q = distributions((3, 7), seed=6, zeros=0.2), distributions((3, 7), seed=7)
    out = tvd(p, q)
    np.testing.assert_allclose(out.numpy(), reference.tvd_items(p, q), rtol=0, atol=1e-15)
    assert not np.allclose(out.numpy(), ((p - q) ** 2).sum(-1).numpy())
    # any finite reals are accepted (KDE grids may have negative lobes)
    np.testing.assert_allclose(tvd(p - 0.2, q).numpy(), reference.tvd_items(p - 0.2, q), rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend,dtype", backend_dtypes(dtypes=(torch.float64, torch.float32, torch.float16)))
def test_every_backend_matches_scipy(backend, dtype, tol):
    # small: the Triton interpreter is slow. (B, 4, 4) tables over (-2, -1) as in the W3 benchmark; zeros in both.
    p, q = distributions((6, 16), seed=30, zeros=0.3, dtype=dtype), distributions((6, 16), seed=31, zeros=0.3,
                                                                                     dtype=dtype)
    q[0], q[1, :5] = p[0], 0.0  # identical rows; q = 0 < p gives kl = inf
    q[1] = q[1] / q[1].sum()
    for kind, fn in FUNCTIONS.items():
        with use(backend):
            out = fn(p.reshape(6, 4, 4), q.reshape(6, 4, 4), dim=(-2, -1))
            out_t = fn(p.t(), q.t(), dim=0)  # strided rows
        assert out.dtype == dtype and out.shape == (6,)
        ref = reference.divergence_items(kind, p, q)
        for got in (out, out_t):
            torch.testing.assert_close(got.double(), ref, **tol[dtype])
        assert out[0] == 0 and (torch.isinf(out[1]) if kind == "kl" else torch.isfinite(out[1]))


@pytest.mark.parametrize("backend,dtype", backend_dtypes())
def test_backends_agree_with_torch_path_values_and_gradients(backend, dtype, tol):
    """Public kl/jsd/tvd under each backend vs the torch path at the same dtype: without a gradient (the fused
    kernels) and with one (documented: the torch path runs, so values and gradients match)."""
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(5, 4, 4, generator=g, dtype=dtype), -1).requires_grad_()
    q = torch.softmax(torch.randn(5, 4, 4, generator=g, dtype=dtype), -1).requires_grad_()
    for fn in (lambda: kl(p, q, dim=(-2, -1)), lambda: jsd(p, q, dim=-1, base=2),
               lambda: tvd(p, q, dim=(0, 2), keepdim=True)):
        with torch.no_grad():  # the fused metric kernels serve evaluation; with grad the torch path runs
            with use(backend):
                got = fn()
            with use("torch"):
                ref = fn()
            torch.testing.assert_close(got, ref, **tol[dtype])
        with use(backend):
            got = fn()
        with use("torch"):
            ref = fn()
        torch.testing.assert_close(got, ref, **tol[dtype])
        cot = torch.rand(got.shape, generator=g, dtype=dtype)
        grads = torch.autograd.grad((got * cot).sum(), (p, q)), torch.autograd.grad((ref * cot).sum(), (p, q))
        for gg, gr in zip(*grads):
            torch.testing.assert_close(gg, gr, **tol[dtype])


def _kernel(backend):
    return divergence_triton if backend == "triton" else torch.ops.kdekit.divergence


def _kernel_backward(backend):
    return divergence_triton_backward if backend == "triton" else torch.ops.kdekit.divergence_backward


@pytest.mark.parametrize("backend,dtype", backend_dtypes(("cpp", "triton")))
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_kernel_values_and_gradients_match_the_torch_reference(backend, dtype, kind, tol):
    """The kernel op at ``dtype`` against the float64 torch path on the same inputs (exact zeros in p, tvd ties),
    values and gradients. Triton computes and returns float32."""
    p, q = distributions((5, 12), seed=32, zeros=0.3, dtype=dtype), distributions((5, 12), seed=33, dtype=dtype)
    p[4, :3] = q[4, :3]  # tvd ties: zero gradient
    ps, qs = p.clone().requires_grad_(), q.clone().requires_grad_()
    out = _kernel(backend)(ps, qs, kind)
    pr, qr = p.double().requires_grad_(), q.double().requires_grad_()
    with use("torch"):
        ref = FUNCTIONS[kind](pr, qr)
    torch.testing.assert_close(out.double(), ref.detach(), **tol[dtype])
    cot = torch.linspace(-1.0, 2.0, 5, dtype=out.dtype)
    got = torch.autograd.grad((out * cot).sum(), (ps, qs))
    want = torch.autograd.grad((ref * cot.double()).sum(), (pr, qr))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, **tol[dtype])


@pytest.mark.parametrize("backend", backends(("triton",)))
def test_triton_kernels_loop_over_rows_longer_than_a_block(backend, tol):
    p, q = distributions((3, 70), seed=40, zeros=0.2, dtype=torch.float32), distributions((3, 70), seed=41,
                                                                                            dtype=torch.float32)
    for kind in ("kl", "jsd", "tvd"):  # 64-wide tiles: two per row
        ps, qs = p.clone().requires_grad_(), q.clone().requires_grad_()
        out = divergence_triton(ps, qs, kind)
        pr, qr = p.double().requires_grad_(), q.double().requires_grad_()
        with use("torch"):
            ref = FUNCTIONS[kind](pr, qr)
        torch.testing.assert_close(out.double(), ref.detach(), **tol[torch.float32])
        for g, w in zip(torch.autograd.grad(out.sum(), (ps, qs)), torch.autograd.grad(ref.sum(), (pr, qr))):
            torch.testing.assert_close(g.double(), w, **tol[torch.float32])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter (numpy) on the bad entries
@pytest.mark.parametrize("backend", backends(("cpp", "triton")))
def test_kernels_flag_rows_with_a_bad_entry(backend):
    op = _kernel(backend)
    p, q = distributions((4, 6), seed=34, dtype=torch.float32), distributions((4, 6), seed=35, dtype=torch.float32)
    p[1, 2], q[2, 5], p[3, 0] = -0.1, float("nan"), float("inf")
    for kind in ("kl", "jsd"):
        out = op(p, q, kind)
        assert torch.isfinite(out[0]) and torch.isnan(out[1:]).all()
        gp, gq = _kernel_backward(backend)(torch.ones(4), p, q, kind)
        assert (gp[1:] == 0).all() and (gq[1:] == 0).all() and torch.isfinite(gp[0]).all()
    assert torch.isfinite(op(p[:2], q[:2], "tvd")).all()  # tvd takes any reals


@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_cpp_kernel_matches_scipy_and_gradcheck(backend):
    g = np.random.default_rng(4)
    p, q = g.random((4, 16)), g.random((4, 16))
    p[0, :3] = 0  # exact zeros
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    out_kl = torch.ops.kdekit.divergence(torch.tensor(p), torch.tensor(q), "kl").numpy()
    out_jsd = torch.ops.kdekit.divergence(torch.tensor(p), torch.tensor(q), "jsd").numpy()
    np.testing.assert_allclose(out_kl, reference.kl_items(p, q), rtol=1e-12)
    np.testing.assert_allclose(out_jsd, reference.jsd_items(p, q), rtol=1e-9)
    pp, qq = torch.tensor(p[1:, :5] + 0.1).requires_grad_(), torch.tensor(q[1:, :5] + 0.1).requires_grad_()
    for kind in ("kl", "jsd"):
        assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdekit.divergence(a, b, kind), [pp, qq])
    with pytest.raises(RuntimeError, match="kind must be"):
        torch.ops.kdekit.divergence(torch.tensor(p), torch.tensor(q), "tv")


@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_cpp_kernel_gradcheck_float64_and_opcheck(backend):
    p = distributions((3, 5), seed=36).requires_grad_()
    q = distributions((3, 5), seed=37).requires_grad_()
    for kind in ("kl", "jsd", "tvd"):
        assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdekit.divergence(a, b, kind), (p, q))
    grad = torch.rand(3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.kdekit.divergence, (p, q, "tvd"))
    torch.library.opcheck(torch.ops.kdekit.divergence_backward, (grad, p.detach(), q.detach(), "tvd"))
    pr = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    qr = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    for kind in ("kl", "jsd"):  # unnormalised inputs
        torch.library.opcheck(torch.ops.kdekit.divergence, (pr, qr, kind))
        torch.library.opcheck(torch.ops.kdekit.divergence_backward, (grad, pr.detach(), qr.detach(), kind))
    with pytest.raises(RuntimeError, match="kind must be"):
        torch.ops.kdekit.divergence(p.detach(), q.detach(), "hellinger")


@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_cpp_float32_log_is_accurate_over_the_float_range(backend):
    # float32 rows use a polynomial log: x log(x / 1) over 1e-30 .. 1e30 against float64
    x = torch.logspace(-30, 30, 20001, dtype=torch.float32)
    out = torch.ops.kdekit.divergence(x[:, None], torch.ones_like(x)[:, None], "kl")
    ref = x.double() * torch.log(x.double())
    assert ((out.double() - ref).abs() / ref.abs().clamp(min=1e-300)).max() < 3e-7
    assert torch.ops.kdekit.divergence(x[:3, None], torch.zeros(3, 1), "kl").isinf().all()  # q = 0 < p


@pytest.mark.parametrize("backend", backends(("triton",)))
def test_triton_ops_opcheck_and_repeatability(backend):
    p = distributions((3, 7), seed=38, zeros=0.3, dtype=torch.float32).requires_grad_()
    q = distributions((3, 7), seed=39, dtype=torch.float32).requires_grad_()
    torch.library.opcheck(divergence_triton, (p, q, "jsd"))
    torch.library.opcheck(divergence_triton_backward, (torch.rand(3), p.detach(), q.detach(), "kl"))
    assert torch.equal(divergence_triton(p, q, "jsd"), divergence_triton(p, q, "jsd"))
    with pytest.raises(ValueError, match="kind must be"):
        divergence_triton(p, q, "hellinger")


def test_mask_equals_dropping():
    p, q = distributions((3, 12), seed=8), distributions((3, 12), seed=9)
    mask = torch.rand(p.shape, generator=torch.Generator().manual_seed(10)) > 0.3
    pp, qq = p.masked_fill(~mask, float("nan")), q.masked_fill(~mask, -1.0)  # padding may hold anything
    for i in range(3):
        a, b = p[i][mask[i]].numpy(), q[i][mask[i]].numpy()
        ref_kl, ref_jsd = (reference.divergence_items(kind, a, b).item() for kind in ("kl", "jsd"))
        assert math.isclose(kl(pp, qq, mask=mask)[i].item(), ref_kl, rel_tol=0, abs_tol=1e-12)
        assert math.isclose(jsd(pp, qq, mask=mask)[i].item(), ref_jsd, rel_tol=0, abs_tol=1e-12)
        assert math.isclose(tvd(pp, qq, mask=mask)[i].item(), reference.tvd_items(a, b).item(), rel_tol=0,
                            abs_tol=1e-15)
    pg = pp.clone().requires_grad_()
    (jsd(pg, qq, mask=mask).sum() + kl(pg, qq, mask=mask).sum() + tvd(pg, qq, mask=mask).sum()).backward()
    assert torch.isfinite(pg.grad).all() and (pg.grad[~mask] == 0).all()


@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float16, torch.bfloat16]))
def test_low_precision(dtype, tol):
    p, q = distributions((4, 2, 64), seed=11, zeros=0.2, dtype=dtype), distributions((4, 2, 64), seed=12, dtype=dtype)
    for fn in (jsd, kl, tvd):
        out = fn(p, q)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), fn(p.double(), q.double()), **tol[dtype])


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(seed):
    p = distributions((2, 3, 5), seed=seed).requires_grad_()
    q = distributions((2, 3, 5), seed=seed + 10).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: jsd(a, b, base=2), (p, q))
    assert torch.autograd.gradcheck(lambda a, b: kl(a, b, dim=(-2, -1)), (p, q))
    assert torch.autograd.gradcheck(lambda a, b: tvd(a, b), (p, q))  # |p - q| >= 1e-4 below
    assert (p - q).abs().min() > 1e-4
    assert torch.autograd.gradgradcheck(lambda a, b: jsd(a, b), (p, q))


def test_gradients_exact_where_the_other_argument_is_zero():
    # a positive prediction against a target with empty cells: d jsd / dp = log(p / m) / 2, d kl(q || p) / dp = -q / p
    p = distributions((3, 6), seed=13).requires_grad_()
    q = distributions((3, 6), seed=14, zeros=0.5)
    assert (q == 0).any()
    jsd(p, q).sum().backward()
    m = (p.detach() + q) / 2
    torch.testing.assert_close(p.grad, 0.5 * torch.log(p.detach() / m), rtol=0, atol=1e-14)
    p.grad = None
    kl(q, p).sum().backward()
    torch.testing.assert_close(p.grad, -q / p.detach(), rtol=0, atol=1e-14)
    # at p_i = 0 the documented convention: finite (0 log 0 held constant)
    p0 = q.clone().requires_grad_()
    r = distributions((3, 6), seed=15).requires_grad_()
    (jsd(p0, r).sum() + kl(p0, r).sum()).backward()
    assert torch.isfinite(p0.grad).all() and torch.isfinite(r.grad).all()


def test_float32_gradients_match_float64():
    p, q = distributions((4, 32), seed=16), distributions((4, 32), seed=17)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        a, b = p.to(dtype).requires_grad_(), q.to(dtype).requires_grad_()
        (jsd(a, b).sum() + kl(a, b).sum() + tvd(a, b).sum()).backward()
        grads[dtype] = (a.grad.double(), b.grad.double())
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        torch.testing.assert_close(g32, g64, rtol=1e-5, atol=1e-6)


def test_inputs_unchanged_including_zeros():
    p, q = distributions((3, 8), seed=18, zeros=0.4), distributions((3, 8), seed=19, zeros=0.4)
    mask = p > -1
    before = (p.clone(), q.clone(), mask.clone())
    for fn in (jsd, kl, tvd):
        fn(p, q, mask=mask)
    for b, a in zip(before, (p, q, mask)):
        assert torch.equal(b, a)
    assert (p == 0).any()  # the seed's JSD would have overwritten these with 1e-8


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter (numpy) on the bad entries
@pytest.mark.parametrize("backend", backends())
def test_validation(backend):
    p, q = distributions((2, 5), seed=20), distributions((2, 5), seed=21)
    if backend == "triton":
        p, q = p.float(), q.float()
    neg = p.clone()
    neg[1, 2] = -0.1
    with use(backend):
        for fn in (jsd, kl):
            with pytest.raises(ValueError, match="p must be finite and non-negative"):
                fn(neg, q)
            with pytest.raises(ValueError, match="q must be finite and non-negative"):
                fn(p, q.masked_fill(q > 0.3, float("nan")))
            with pytest.raises(ValueError, match="q must be finite and non-negative"):
                fn(p, q.masked_fill(q > 0.3, float("inf")))
            out = fn(neg, q, validate=False)  # unchecked: the item with a bad entry is NaN, the others are not
            assert torch.isnan(out[1]) and torch.isfinite(out[0])
            mask = torch.ones_like(p, dtype=torch.bool)
            mask[1, 2] = False
            assert torch.isfinite(fn(neg, q, mask=mask)).all()  # only valid entries are checked
        assert torch.isfinite(tvd(neg, q)).all()
    for fn in (jsd, kl, tvd):
        with pytest.raises(ValueError, match="q has shape"):
            fn(p, q[:, :4])
        with pytest.raises(TypeError, match="q has dtype"):
            fn(p, q.half())
        with pytest.raises(TypeError, match="p must have a floating dtype"):
            fn(p.long(), q.long())
        with pytest.raises(ValueError, match="mask has shape"):
            fn(p, q, mask=torch.ones(5, dtype=torch.bool))
        with pytest.raises(ValueError, match="dim 2 is out of range"):
            fn(p, q, dim=(1, 2))
        with pytest.raises(ValueError, match="no entries along dim"):
            fn(p[:, :0], q[:, :0])
    for bad in (0, 1, -2.0, float("inf"), "e"):
        with pytest.raises(ValueError, match="base must be"):
            jsd(p, q, base=bad)


masses = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1.0))


@given(arrays(np.float64, st.integers(min_value=2, max_value=12), elements=masses), st.data())
def test_jsd_tvd_symmetric_and_bounded(a, data):
    b = data.draw(arrays(np.float64, a.shape, elements=masses))
    a, b = np.append(a, 1e-3), np.append(b, 1e-3)  # non-empty support
    p, q = torch.from_numpy(a / a.sum()), torch.from_numpy(b / b.sum())
    for fn, hi in ((jsd, math.log(2)), (tvd, 1.0)):
        d = fn(p, q).item()
        assert d == fn(q, p).item()
        assert 0.0 <= d <= hi + 1e-15
    assert jsd(p, q, base=2).item() <= 1.0 + 1e-15
    assert jsd(p, p).item() == 0.0 and tvd(p, p).item() == 0.0


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

ops = torch.ops.kdekit


@kernel_test
@pytest.mark.parametrize("dtype", kernel_dtypes())
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_cuda_kernel_matches_float64_reference(dtype, kind, tol):
    g = torch.Generator().manual_seed(8)
    p = torch.rand(4, 700, generator=g, dtype=torch.float64).add(0.05).to(dtype)
    q = torch.rand(4, 700, generator=g, dtype=torch.float64).add(0.05).to(dtype)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    out, grads = kernel_grads(lambda a, b: ops.divergence(a, b, kind), [p.to(DEVICE), q.to(DEVICE)])
    ref, ref_grads = kernel_grads(lambda a, b: reference.divergence_torch64(a, b, kind), [p.double(), q.double()])
    kernel_close(out, ref, dtype, tol)
    for gr, rg in zip(grads, ref_grads):
        kernel_close(gr, rg, dtype, tol)


@kernel_test
@pytest.mark.parametrize("kind", ["kl", "jsd"])
def test_cuda_kernel_zero_entries_match_cpu(kind):
    p = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    out, grads = kernel_grads(lambda a, b: ops.divergence(a, b, kind), [p.to(DEVICE), q.to(DEVICE)])
    ref, ref_grads = kernel_grads(lambda a, b: ops.divergence(a, b, kind), [p, q])
    torch.testing.assert_close(out.cpu(), ref, atol=1e-12, rtol=1e-12)
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr.cpu(), rg, atol=1e-12, rtol=1e-12, equal_nan=True)


@kernel_test
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_cuda_kernel_flags_rows_with_bad_entries_like_cpu(dtype, kind):
    """kl/jsd: a row with an infinite, NaN or negative entry is NaN with a zero gradient; tvd takes any reals."""
    p = torch.tensor([[0.2, 0.3, 0.5], [0.2, float("inf"), 0.5], [0.2, 0.3, 0.5], [0.6, 0.4, -0.1],
                      [0.0, 0.5, 0.5]], dtype=dtype)
    q = torch.tensor([[0.3, 0.3, 0.4], [0.3, 0.3, 0.4], [0.3, float("nan"), 0.4], [0.3, 0.3, 0.4],
                      [0.5, 0.5, 0.0]], dtype=dtype)
    out, grads = kernel_grads(lambda a, b: ops.divergence(a, b, kind), [p.to(DEVICE), q.to(DEVICE)])
    ref, ref_grads = kernel_grads(lambda a, b: ops.divergence(a, b, kind), [p, q])
    if kind != "tvd":
        assert out[1:4].isnan().all() and not out[[0, 4]].isnan().any()
        assert all((g[1:4] == 0).all() for g in grads)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.cpu(), ref, rtol=rtol, atol=rtol, equal_nan=True)
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr.cpu(), rg, rtol=rtol, atol=rtol, equal_nan=True)


@kernel_test
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_cuda_kernel_gradcheck(kind):
    g = torch.Generator().manual_seed(9)
    p, q = (torch.rand(3, 6, generator=g, dtype=torch.float64).add(0.1).to(DEVICE).requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b: ops.divergence(a, b, kind), [p, q])


@kernel_test
@requires_cuda
def test_cuda_kernel_is_deterministic_on_side_streams():
    _, _, w = (t.to(DEVICE).float() for t in clustered_points(6, 2000, seed=10, weights=True))
    first = ops.divergence(w.softmax(-1), w.flip(-1).softmax(-1), "jsd")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = ops.divergence(w.softmax(-1), w.flip(-1).softmax(-1), "jsd")
    stream.synchronize()
    assert torch.equal(first, again)


@kernel_test
def test_cuda_kernel_argument_errors_name_the_argument():
    x, y, _ = (t.to(DEVICE) for t in clustered_points(2, 5, seed=11, weights=True))
    with pytest.raises(RuntimeError, match="kind must be"):
        ops.divergence(x, y, "hellinger")


def _tables(B, K, seed, zeros=0.1):
    g = torch.Generator().manual_seed(seed)
    e = -torch.log(torch.rand(B, K, generator=g, dtype=torch.float64))
    e = torch.where(torch.rand(B, K, generator=g) < zeros, 0.0, e)
    e[:, 0] += 1e-3
    return e / e.sum(-1, keepdim=True)


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes())
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_divergences_on_device(backend, dtype, kind, tol):
    fn = FUNCTIONS[kind]
    p, q = _tables(6, 700, seed=10, zeros=0.0), _tables(6, 700, seed=11, zeros=0.0)
    rounded = [t.to(dtype) for t in (p, q)]
    with use(backend):  # no gradient: the kernels
        out = fn(*(t.to(DEVICE) for t in rounded))
    device_close(out, fn(*(t.double() for t in rounded)), tol[dtype], f"{kind} without gradient")
    compare_on_device(fn, [p, q], dtype, backend, tol[dtype])
    if kind != "kl":  # zero cells (kl is inf where q = 0 < p)
        compare_on_device(fn, [_tables(6, 16, seed=12), _tables(6, 16, seed=13)], dtype, backend, tol[dtype])


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes([torch.float32, torch.float64]))
@pytest.mark.parametrize("kind", ["kl", "jsd"])
def test_divergence_rows_with_bad_entries_are_nan_and_raise_on_device(backend, dtype, kind):
    fn = FUNCTIONS[kind]
    p, q = _tables(5, 9, seed=14).to(dtype), _tables(5, 9, seed=15).to(dtype)
    p[1, 2], q[2, 3], p[3, 0] = float("inf"), float("nan"), -0.1  # rows 1-3 bad; 0 and 4 fine
    with use(backend):
        out = fn(p.to(DEVICE), q.to(DEVICE), validate=False).cpu()
        with pytest.raises(ValueError, match="must be finite and non-negative"):
            fn(p.to(DEVICE), q.to(DEVICE))
    assert out[1:4].isnan().all()
    ref = fn(p[[0, 4]].double(), q[[0, 4]].double())
    torch.testing.assert_close(out[[0, 4]].double(), ref, rtol=1e-5, atol=1e-6)
