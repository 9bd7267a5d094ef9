"""ccc / pearson / ccc_loss / CCCMoments / the torchmetrics Metric against numpy moments, scipy.stats.pearsonr and
torchmetrics (tests/reference.py) under every backend (torch, cpp, triton) and dtype; the fused kernels called
directly (values and gradients against the float64 torch path, gradcheck, opcheck, repeatability); masks, undefined
items, huge and tiny inputs; streaming and DDP merging; and on the device (gpu): the CUDA kernel against the CPU
kernel in float64 and the public ops under each device backend."""
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from kdekit.ops.ccc import CCCMoments, ccc, ccc_loss, ccc_triton, ccc_triton_backward, pearson
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

KERNELS = ("cpp", "triton")  # triton: the interpreter (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # fresh kernel outputs are NaN until written
ccc_numpy = reference.ccc_numpy


def correlated(shape, seed, dtype=torch.float64, offset=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    y = 0.7 * x + 0.5 * torch.randn(shape, dtype=torch.float64, generator=g) + offset
    return x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("n", [2, 5, 37, 1000])
@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_matches_numpy_moments(n, unbiased):
    x, y = correlated((2, 3, n), seed=n)
    out = ccc(x, y, dim=-1, unbiased=unbiased)
    assert out.shape == (2, 3) and out.dtype == torch.float64
    ref = np.array([[ccc_numpy(a, b, int(unbiased)) for a, b in zip(xr, yr)] for xr, yr in zip(x.numpy(), y.numpy())])
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ccc_loss(x, y, dim=-1, unbiased=unbiased, reduction="none").numpy(), 1 - ref, rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(ccc_loss(x, y, dim=-1, unbiased=unbiased).item(), (1 - ref).mean(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ccc_loss(x, y, dim=-1, unbiased=unbiased, reduction="sum").item(), (1 - ref).sum(),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [3, 64, 501])
@pytest.mark.parametrize("backend", backends())
def test_default_dim_reduces_the_samples_like_torchmetrics(n, backend):
    """(N, d) predictions, e.g. activation and valence: one CCC per column by default, as torchmetrics."""
    x, y = correlated((n, 2), seed=n)
    ref = reference.concordance_torchmetrics(x, y)  # torchmetrics: dim 0, unbiased moments
    lin = torch.tensor([ccc_numpy(x[:, d].numpy(), y[:, d].numpy(), 0) for d in range(2)], dtype=torch.float64)
    with use(backend):
        torch.testing.assert_close(ccc(x, y, unbiased=True), ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(ccc(x, y), lin, rtol=0, atol=1e-12)
        torch.testing.assert_close(ccc(x[:, 0], y[:, 0]), lin[0], rtol=0, atol=1e-12)  # (N,): one value
        torch.testing.assert_close(ccc(x.T, y.T, dim=-1, unbiased=True), ref, rtol=0, atol=1e-12)
    # the two conventions differ by O(1/n): the default is Lin's population form, not torchmetrics'
    assert (lin - ref).abs().max() > 1e-4 / n


@pytest.mark.parametrize("backend,dtype", backend_dtypes(dtypes=(torch.float64, torch.float32, torch.float16)))
def test_every_backend_matches_numpy_moments(backend, dtype, tol):
    # small: the Triton interpreter runs one program per item. dim=0 hands the kernels strided (transposed) rows.
    x, y = correlated((3, 2, 37), seed=20, dtype=dtype)
    for dim, unbiased in ((-1, False), (0, True), ((0, 2), False)):
        with use(backend):
            out = ccc(x, y, dim=dim, unbiased=unbiased)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), reference.ccc_items(x, y, dim, int(unbiased)), **tol[dtype])


@pytest.mark.parametrize("backend,dtype", backend_dtypes())
def test_backends_agree_with_torch_path_values_and_gradients(backend, dtype, tol):
    """Public ccc under each backend vs the torch path at the same dtype: without a gradient (the fused kernels) and
    with one (documented: the torch path runs, so values and gradients match)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, 25, generator=g, dtype=dtype)
    b = (a + torch.randn(4, 3, 25, generator=g, dtype=dtype)).requires_grad_()
    a.requires_grad_()
    for fn in (lambda: ccc(a, b, dim=(0, 2)), lambda: ccc(a, b, dim=-1, unbiased=True, keepdim=True)):
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
        grads = torch.autograd.grad((got * cot).sum(), (a, b)), torch.autograd.grad((ref * cot).sum(), (a, b))
        for gg, gr in zip(*grads):
            torch.testing.assert_close(gg, gr, **tol[dtype])


def _kernel(backend):
    return ccc_triton if backend == "triton" else torch.ops.kdekit.ccc


@pytest.mark.parametrize("backend,dtype", backend_dtypes(("cpp", "triton")))
@pytest.mark.parametrize("unbiased", [False, True])
def test_kernel_values_and_gradients_match_the_torch_reference(backend, dtype, unbiased, tol):
    """The kernel op at ``dtype`` against the float64 torch path on the same inputs, values and gradients (an
    undefined item: NaN with a zero gradient). Triton computes and returns float32."""
    x, y = correlated((4, 45), seed=21, dtype=dtype)
    x[2], y[2] = 0.25, 0.25  # both constant and equal: undefined, NaN with a zero gradient
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = _kernel(backend)(xs, ys, unbiased)
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    with use("torch"):
        ref = ccc(xr, yr, dim=-1, unbiased=unbiased)
    torch.testing.assert_close(out.double(), ref.detach(), **tol[dtype], equal_nan=True)
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3]]).all()
    cot = torch.tensor([0.5, -1.0, 1.0, 2.0], dtype=out.dtype)
    got = torch.autograd.grad((out * cot).nansum(), (xs, ys))
    want = torch.autograd.grad((ref * cot.double()).nansum(), (xr, yr))
    for g, w in zip(got, want):
        assert g.dtype == dtype and (g[2] == 0).all()
        torch.testing.assert_close(g.double(), w, **tol[dtype])


@pytest.mark.parametrize("backend", backends(("cpp",)))
@pytest.mark.parametrize("unbiased", [False, True])
def test_cpp_kernel_matches_numpy_and_gradcheck(backend, unbiased):
    g = np.random.default_rng(3)
    x, y = g.normal(size=(5, 30)), g.normal(size=(5, 30))
    y += 0.5 * x
    out = torch.ops.kdekit.ccc(torch.tensor(x), torch.tensor(y), unbiased).numpy()
    ref = [ccc_numpy(a, b, int(unbiased)) for a, b in zip(x, y)]
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    args = [torch.tensor(x[:2, :6]).requires_grad_(), torch.tensor(y[:2, :6]).requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdekit.ccc(a, b, unbiased), args)


@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_cpp_kernel_gradcheck_float64_on_strided_rows(backend):
    x, y = correlated((3, 6), seed=22)
    args = (x.t().requires_grad_(), y.t().requires_grad_())  # strided rows
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdekit.ccc(a, b, True), args)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdekit.ccc(a, b, False), args)


@pytest.mark.parametrize("backend", backends(("cpp",)))
def test_cpp_kernel_opcheck(backend):
    g = torch.Generator().manual_seed(0)
    x, y = ((0.3 * torch.randn(2, 12, generator=g, dtype=torch.float64)).clamp(-1, 1).requires_grad_()
            for _ in range(2))
    torch.library.opcheck(torch.ops.kdekit.ccc, (x, y, False))
    torch.library.opcheck(torch.ops.kdekit.ccc_backward, (torch.rand(2, dtype=torch.float64), x.detach(), y.detach(),
                                                          True))


@pytest.mark.parametrize("backend", backends(("triton",)))
def test_triton_ops_opcheck_and_repeatability(backend):
    x, y = correlated((3, 20), seed=23, dtype=torch.float32)
    args = (x.requires_grad_(), y.t().contiguous().t().requires_grad_(), True)
    torch.library.opcheck(ccc_triton, args)
    torch.library.opcheck(ccc_triton_backward, (torch.rand(3), x.detach(), y.detach(), False))
    assert torch.equal(ccc_triton(*args), ccc_triton(*args))  # one program per item, no atomics


@pytest.mark.parametrize("backend", backends(("triton",)))
def test_triton_kernels_loop_over_rows_longer_than_a_block(backend, tol):
    x, y = correlated((2, 1100), seed=24, dtype=torch.float32)  # two 1024-wide tiles per pass
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = ccc_triton(xs, ys, True)
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    with use("torch"):
        ref = ccc(xr, yr, dim=-1, unbiased=True)
    torch.testing.assert_close(out.double(), ref.detach(), **tol[torch.float32])
    for g, w in zip(torch.autograd.grad(out.sum(), (xs, ys)), torch.autograd.grad(ref.sum(), (xr, yr))):
        torch.testing.assert_close(g.double(), w, atol=1e-7, rtol=1e-3)  # entries ~1e-3


def test_pearson_matches_scipy():
    x, y = correlated((3, 2, 41), seed=1)
    ref = reference.pearson_items(x, y, dim=-1)
    np.testing.assert_allclose(pearson(x, y, dim=-1).numpy(), ref.numpy(), rtol=0, atol=1e-12)


def test_dim_tuple_and_keepdim():
    x, y = correlated((5, 4, 6), seed=2)
    out = ccc(x, y, dim=(0, 2))
    ref = [ccc_numpy(x[:, j, :].numpy(), y[:, j, :].numpy(), 0) for j in range(4)]
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    assert ccc(x, y, dim=(2, 0), keepdim=True).shape == (1, 4, 1)
    np.testing.assert_allclose(pearson(x, y, dim=1).numpy(), reference.pearson_items(x, y, dim=1).numpy(), rtol=0,
                               atol=1e-12)


def test_large_offset_does_not_cancel():
    # one-pass sum(x^2) - n mean^2 would lose every digit here (float32: offset 1e4, spread 1)
    x, y = correlated((3, 200), seed=3)
    ref = ccc(x, y, dim=-1)
    torch.testing.assert_close(ccc(x + 1e8, y + 1e8, dim=-1), ref, rtol=0, atol=1e-7)
    got32 = ccc((x + 1e4).float(), (y + 1e4).float(), dim=-1)
    ref32 = ccc((x + 1e4).float().double(), (y + 1e4).float().double(), dim=-1)  # same rounded inputs, exact
    torch.testing.assert_close(got32.double(), ref32, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("unbiased", [False, True])
def test_low_precision(dtype, unbiased, tol):
    x, y = correlated((4, 3, 300), seed=4, dtype=dtype)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) > 0.2
    for fn, kw in ((ccc, dict(unbiased=unbiased)), (pearson, {})):
        out = fn(x, y, dim=-1, mask=mask, **kw)
        assert out.dtype == dtype
        ref = fn(x.double(), y.double(), dim=-1, mask=mask, **kw)  # float64 on the same rounded inputs
        torch.testing.assert_close(out.double(), ref, **tol[dtype])


def test_mask_equals_dropping():
    x, y = correlated((3, 4, 30), seed=6)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(7)) > 0.4
    xp = x.masked_fill(~mask, float("nan"))  # padding may hold anything
    yp = y.masked_fill(~mask, float("inf"))
    for unbiased in (False, True):
        out = ccc(xp, yp, dim=-1, mask=mask, unbiased=unbiased)
        ref = [[ccc_numpy(x[i, j][mask[i, j]].numpy(), y[i, j][mask[i, j]].numpy(), int(unbiased)) for j in range(4)]
               for i in range(3)]
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    ref_p = [[reference.pearson_items(x[i, j][mask[i, j]], y[i, j][mask[i, j]]).item() for j in range(4)]
             for i in range(3)]
    np.testing.assert_allclose(pearson(xp, yp, dim=-1, mask=mask).numpy(), ref_p, rtol=0, atol=1e-12)
    xg = xp.clone().requires_grad_()
    ccc(xg, yp, dim=-1, mask=mask).sum().backward()
    assert torch.isfinite(xg.grad).all() and (xg.grad[~mask] == 0).all()


def test_undefined_items_are_nan_with_zero_gradient():
    x, y = correlated((6, 8), seed=8)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0] = False  # no valid entry
    mask[1, 1:] = False  # one valid entry
    x[2] = 0.1  # constant pred, varying target
    x[3], y[3] = 0.1, 0.1  # both constant and equal
    out = ccc(x, y, dim=-1, mask=mask)
    assert torch.isnan(out[0]) and torch.isnan(out[3])
    assert out[1] == 0 and out[2] == 0  # zero covariance over a positive denominator
    assert torch.isnan(ccc(x, y, dim=-1, mask=mask, unbiased=True)[1])
    r = pearson(x, y, dim=-1, mask=mask)
    assert torch.isnan(r[:4]).all() and torch.isfinite(r[4:]).all()
    xg = x.clone().requires_grad_()
    (ccc(xg, y, dim=-1, mask=mask).nansum() + pearson(xg, y, dim=-1, mask=mask).nansum()).backward()
    assert torch.isfinite(xg.grad).all() and (xg.grad[[0, 3]] == 0).all()
    x45 = x[4:].clone().requires_grad_()
    (ccc(x45, y[4:], dim=-1).sum() + pearson(x45, y[4:], dim=-1).sum()).backward()
    torch.testing.assert_close(xg.grad[4:], x45.grad, rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    x, y = correlated((2, 7), seed=seed)
    x.requires_grad_()
    y.requires_grad_()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask[:, :3] = True
    assert torch.autograd.gradcheck(lambda a, b: ccc(a, b, dim=-1), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: ccc(a, b, dim=-1, mask=mask, unbiased=True), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: pearson(a, b, dim=-1, mask=mask), (x, y))
    x3, y3 = correlated((3, 2, 4), seed=seed)
    assert torch.autograd.gradcheck(lambda a, b: ccc_loss(a, b, dim=(0, 2)),
                                    (x3.requires_grad_(), y3.requires_grad_()))
    assert torch.autograd.gradgradcheck(lambda a, b: ccc(a, b, dim=-1), (x, y))


def test_float32_gradients_match_float64():
    x, y = correlated((4, 50), seed=9)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        a, b = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
        (ccc(a, b, dim=-1).sum() + pearson(a, b, dim=-1).sum()).backward()
        grads[dtype] = (a.grad.double(), b.grad.double())
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        torch.testing.assert_close(g32, g64, rtol=1e-4, atol=1e-6)


def test_inputs_unchanged():
    x, y = correlated((3, 20), seed=10)
    mask = x > -1
    copies = (x.clone(), y.clone(), mask.clone())
    ccc(x, y, mask=mask)
    pearson(x, y, mask=mask)
    CCCMoments().update(x, y, mask=mask)
    for before, after in zip(copies, (x, y, mask)):
        assert torch.equal(before, after)


def _split_update(x, y, mask, bounds, dim):
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl = [slice(None)] * x.dim()
        sl[dim] = slice(lo, hi)
        sl = tuple(sl)
        parts.append(CCCMoments(dim=dim).update(x[sl], y[sl], mask=None if mask is None else mask[sl]))
    return parts


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("offset, atol", [(0.3, 1e-12), (1e6, 1e-9)])  # merged means carry ~eps * offset / spread
def test_streaming_merge_equals_one_shot(with_mask, offset, atol):
    x, y = correlated((101, 2), seed=11)
    x, y = x + offset, y + offset
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(12)) > 0.3) if with_mask else None
    parts = _split_update(x, y, mask, [0, 7, 8, 60, 101], dim=0)  # uneven parts, one with a single row
    merged = CCCMoments(dim=0)
    for part in parts:
        merged.merge(part)
    sequential = CCCMoments(dim=0)
    for lo, hi in zip([0, 30, 31, 101][:-1], [0, 30, 31, 101][1:]):
        sequential.update(x[lo:hi], y[lo:hi], mask=None if mask is None else mask[lo:hi])
    for unbiased in (False, True):
        ref = ccc(x, y, dim=0, mask=mask, unbiased=unbiased)
        torch.testing.assert_close(merged.compute(unbiased=unbiased), ref, rtol=0, atol=atol)
        torch.testing.assert_close(sequential.compute(unbiased=unbiased), ref, rtol=0, atol=atol)
    torch.testing.assert_close(merged.pearson(), pearson(x, y, dim=0, mask=mask), rtol=0, atol=atol)
    # the point of merging moments: the average of per-part CCCs is a different number
    per_part = torch.stack([p.compute() for p in parts[2:]]).mean(0)
    assert (per_part - ccc(x, y, dim=0, mask=mask)).abs().max() > 1e-3


def test_streaming_float32_input_batched_state_and_reset(tol):
    x, y = correlated((3, 2, 90), seed=13, dtype=torch.float32)
    acc = CCCMoments(dim=-1, unbiased=True)  # state shape (3, 2)
    for lo in range(0, 90, 25):
        acc.update(x[..., lo:lo + 25], y[..., lo:lo + 25])
    out = acc.compute()
    assert out.shape == (3, 2) and out.dtype == torch.float32  # the data's dtype (float64 moments inside)
    torch.testing.assert_close(out.double(), ccc(x.double(), y.double(), dim=-1, unbiased=True), rtol=0, atol=1e-7)
    torch.testing.assert_close(acc.compute(unbiased=False).double(), ccc(x.double(), y.double(), dim=-1), rtol=0,
                               atol=1e-7)
    assert acc.reset() is acc and acc.state is None
    with pytest.raises(RuntimeError, match="update"):
        acc.compute()
    acc.update(x[..., :30], y[..., :30])  # a new pass over the data starts from nothing
    torch.testing.assert_close(acc.compute().double(), ccc(x[..., :30].double(), y[..., :30].double(), dim=-1,
                                                            unbiased=True), rtol=0, atol=1e-7)


def test_all_reduce_without_process_group_is_a_copy():
    assert not dist.is_initialized()
    x, y = correlated((40, 3), seed=14)
    acc = CCCMoments().update(x, y)
    red = acc.all_reduce()
    assert red is not acc
    torch.testing.assert_close(red.compute(), acc.compute(), rtol=0, atol=0)
    red.update(x, y)  # the copy is independent
    torch.testing.assert_close(acc.compute(), ccc(x, y, dim=0), rtol=0, atol=1e-12)


def _ddp_worker(rank, world, init_file, x, y, mask, bounds, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        lo, hi = bounds[rank], bounds[rank + 1]
        acc = CCCMoments(dim=0)
        acc.update(x[lo:hi], y[lo:hi], mask=mask[lo:hi])
        red = acc.all_reduce()
        torch.save({"ccc": red.compute(), "ccc_u": red.compute(unbiased=True), "local": acc.compute()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_two_ranks(tmp_path):
    x, y = correlated((70, 3), seed=15, offset=50.0)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(16)) > 0.25
    bounds = [0, 23, 70]
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), x, y, mask, bounds, str(tmp_path)), nprocs=2,
                       start_method="fork")  # fork: no re-import of this module in the workers
    local0 = ccc(x[:23], y[:23], dim=0, mask=mask[:23])
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(res["ccc"], ccc(x, y, dim=0, mask=mask), rtol=0, atol=1e-12)
        torch.testing.assert_close(res["ccc_u"], ccc(x, y, dim=0, mask=mask, unbiased=True), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.load(tmp_path / "rank0.pt")["local"], local0, rtol=0, atol=1e-12)


def test_streaming_errors():
    x, y = correlated((10, 2), seed=17)
    with pytest.raises(RuntimeError, match="update"):
        CCCMoments().compute()
    with pytest.raises(RuntimeError, match="update"):
        CCCMoments().all_reduce()
    acc = CCCMoments().update(x, y)
    with pytest.raises(ValueError, match="state shape"):
        acc.update(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="state shape"):
        acc.merge(CCCMoments(dim=0).update(x[:, :1], y[:, :1]))
    with pytest.raises(TypeError, match="other"):
        acc.merge(ccc)
    with pytest.raises(ValueError, match="target"):
        acc.update(x, y[:5])


def test_bad_inputs_raise_naming_the_argument():
    x, y = correlated((2, 5), seed=18)
    with pytest.raises(ValueError, match="target has shape"):
        ccc(x, y[:, :4])
    with pytest.raises(ValueError, match="reduction must be"):
        ccc_loss(x, y, reduction="average")
    with pytest.raises(TypeError, match="target has dtype"):
        ccc(x, y.float())
    with pytest.raises(TypeError, match="pred must"):
        ccc(x.long(), y.long())
    with pytest.raises(TypeError, match="pred must be a torch.Tensor"):
        pearson(x.tolist(), y)
    with pytest.raises(TypeError, match="mask must be a bool"):
        ccc(x, y, mask=torch.ones_like(x))
    with pytest.raises(ValueError, match="mask has shape"):
        ccc(x, y, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        ccc(x, y, dim=2)
    with pytest.raises(ValueError, match="repeated"):
        ccc(x, y, dim=(1, -1))
    with pytest.raises(TypeError, match="dim must be"):
        ccc(x, y, dim=1.0)
    with pytest.raises(ValueError, match="no entries along dim"):
        ccc(x[:, :0], y[:, :0], dim=-1)


@given(st.integers(min_value=3, max_value=40), st.integers(min_value=0, max_value=2**31 - 1), st.booleans())
def test_ccc_permutation_invariant_and_symmetric(n, seed, unbiased):
    x, y = correlated((n,), seed=seed % 10_000)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    ref = ccc(x, y, unbiased=unbiased)
    assert math.isclose(ccc(x[perm], y[perm], unbiased=unbiased).item(), ref.item(), rel_tol=0, abs_tol=1e-13)
    assert math.isclose(ccc(y, x, unbiased=unbiased).item(), ref.item(), rel_tol=0, abs_tol=1e-13)
    assert -1.0 <= ref.item() <= 1.0


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype, scale", [(torch.float64, 1e200), (torch.float64, 1e-200), (torch.float32, 1e20)])
def test_huge_and_tiny_inputs_give_the_same_finite_ccc(backend, dtype, scale):
    """Moments of 1e200 overflow float64 squares: each item is scaled first (CCC and Pearson are scale-free)."""
    x, y = correlated((40, 3), seed=25)
    ref_c, ref_p = ccc(x, y), pearson(x, y)
    xs, ys = (x * scale).to(dtype), (y * scale).to(dtype)
    assert torch.isfinite(xs).all()
    with use(backend):
        got = ccc(xs, ys)  # no gradient: the fused kernel (its NaN items are recomputed scaled)
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), ref_c, rtol=0, atol=atol)
    torch.testing.assert_close(pearson(xs, ys).double(), ref_p, rtol=0, atol=atol)
    xg = xs.clone().requires_grad_()
    ccc(xg, ys).sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_ccc_loss_module_reduces_over_the_samples_by_default():
    from kdekit.nn import CCCLoss

    x, y = correlated((50, 2), seed=26)
    per_column = 1 - ccc(x, y)
    torch.testing.assert_close(CCCLoss()(x, y), per_column.mean(), rtol=0, atol=1e-14)
    torch.testing.assert_close(CCCLoss(reduction="none")(x, y), per_column, rtol=0, atol=1e-14)
    torch.testing.assert_close(CCCLoss(dim=-1, unbiased=True, reduction="sum")(x.T, y.T),
                               (1 - ccc(x, y, unbiased=True)).sum(), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="reduction must be"):
        CCCLoss(reduction="batchmean")


def test_torchmetrics_metric_streams_and_merges_like_one_call():
    from torchmetrics.regression import ConcordanceCorrCoef as TorchmetricsCCC

    from kdekit.metrics import ConcordanceCorrCoef, _merge_stacked

    x, y = correlated((90, 2), seed=27, dtype=torch.float32)
    ours, theirs = ConcordanceCorrCoef(num_outputs=2, unbiased=True), TorchmetricsCCC(num_outputs=2)
    for lo in range(0, 90, 20):
        ours.update(x[lo:lo + 20], y[lo:lo + 20])
        theirs.update(x[lo:lo + 20], y[lo:lo + 20])
    torch.testing.assert_close(ours.compute().float(), theirs.compute(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.compute(), ccc(x.double(), y.double(), unbiased=True), rtol=0, atol=1e-12)
    # the process-merge function: two states gathered = the moments of all the data
    parts = [ConcordanceCorrCoef(num_outputs=2) for _ in range(2)]
    parts[0].update(x[:33], y[:33])
    parts[1].update(x[33:], y[33:])
    merged = ConcordanceCorrCoef(num_outputs=2)
    merged.moments = _merge_stacked(torch.stack([p.moments for p in parts]))
    torch.testing.assert_close(merged.compute(), ccc(x.double(), y.double()), rtol=0, atol=1e-12)
    one = ConcordanceCorrCoef()
    one.update(x[:, 0], y[:, 0])
    assert one.compute().shape == ()
    with pytest.raises(ValueError, match="num_outputs=1"):
        one.update(x, y)


# ---- on the device (gpu) ---------------------------------------------------------------------------------------------

ops = torch.ops.kdekit


@kernel_test
@pytest.mark.parametrize("dtype", kernel_dtypes())
@pytest.mark.parametrize("unbiased", [False, True])
def test_cuda_kernel_matches_cpu_float64(dtype, unbiased, tol):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 300, generator=g, dtype=torch.float64)
    y = (0.6 * x + 0.5 * torch.randn(5, 300, generator=g, dtype=torch.float64) + 0.3).to(dtype)
    x = x.to(dtype)
    out, grads = kernel_grads(lambda a, b: ops.ccc(a, b, unbiased), [x.to(DEVICE), y.to(DEVICE)])
    ref, ref_grads = kernel_grads(lambda a, b: ops.ccc(a, b, unbiased), [x.double(), y.double()])
    kernel_close(out, ref, dtype, tol)
    for gr, rg in zip(grads, ref_grads):
        kernel_close(gr, rg, dtype, tol)


@kernel_test
def test_cuda_kernel_gradcheck_and_undefined_rows():
    g = torch.Generator().manual_seed(6)
    x, y = (torch.randn(3, 11, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b: ops.ccc(a, b, True), [x, y])
    const = torch.ones(2, 4, dtype=torch.float64, device=DEVICE)
    assert ops.ccc(const, const, False).isnan().all()  # zero variance and no mean difference: undefined
    gx, gy = ops.ccc_backward(torch.ones(2, dtype=torch.float64, device=DEVICE), const, const, False)
    assert (gx == 0).all() and (gy == 0).all()  # as the CPU kernel: no gradient through an undefined item
    assert ops.ccc(const[:, :1], const[:, :1], True).isnan().all()  # N = 1 with ddof 1


@kernel_test
@requires_cuda
def test_cuda_kernel_is_deterministic_on_noncontiguous_inputs_and_side_streams():
    x, y, _ = (t.to(DEVICE).float() for t in clustered_points(6, 2000, seed=10, weights=True))
    xt = torch.stack([x, x], -1)[..., 0]  # non-contiguous view
    assert not xt.is_contiguous()
    first = ops.ccc(xt, y, False)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        again = ops.ccc(xt, y, False)
    stream.synchronize()
    assert torch.equal(first, again)


@kernel_test
@requires_cuda
def test_cuda_kernel_argument_errors_name_the_argument():
    x, y, _ = (t.to(DEVICE) for t in clustered_points(2, 5, seed=11, weights=True))
    with pytest.raises(RuntimeError, match="y must be on"):
        ops.ccc(x, y.cpu(), False)
    with pytest.raises(RuntimeError, match="x must be float16, bfloat16, float32 or float64"):
        ops.ccc(x.int(), y.int(), False)


@device_test
@pytest.mark.parametrize("backend", device_backends())
@pytest.mark.parametrize("dtype", dtypes())
@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_and_pearson_on_device(backend, dtype, unbiased, tol):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 300, generator=g, dtype=torch.float64)
    y = 0.6 * x + 0.5 * torch.randn(5, 300, generator=g, dtype=torch.float64) + 0.3
    rounded = [t.to(dtype) for t in (x, y)]
    with use(backend):  # no gradient: the kernels
        out = ccc(*(t.to(DEVICE) for t in rounded), dim=-1, unbiased=unbiased)
    ref = ccc(*(t.double() for t in rounded), dim=-1, unbiased=unbiased)
    assert out.dtype == dtype
    device_close(out, ref, tol[dtype], "ccc without gradient")
    compare_on_device(lambda a, b: ccc(a, b, dim=-1, unbiased=unbiased), [x, y], dtype, backend, tol[dtype])
    compare_on_device(lambda a, b: pearson(a, b, dim=-1), [x, y], dtype, backend, tol[dtype])
    mask = torch.rand(5, 300, generator=g) > 0.3
    compare_on_device(lambda a, b: ccc(a, b, dim=-1, mask=mask.to(a.device), unbiased=unbiased), [x, y], dtype,
                      backend, tol[dtype])


@device_test
def test_ccc_moments_streaming_on_device_equals_one_call():
    g = torch.Generator().manual_seed(9)
    x, y = (torch.randn(100, 2, generator=g, dtype=torch.float64).to(DEVICE) for _ in range(2))
    moments = CCCMoments(dim=0)
    for s in range(0, 100, 30):
        moments.update(x[s:s + 30], y[s:s + 30])
    device_close(moments.compute(), ccc(x, y, dim=0).cpu(), dict(rtol=1e-10, atol=1e-12))
