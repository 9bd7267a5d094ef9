"""The CUDA kernels (csrc/cuda/*.cu): every differentiable op is registered for the CUDA dispatch key; the nvcc compile
check CI runs (csrc/cuda/nvcc_check.py) builds an object with the registration and every dtype's kernels; and, on a
machine with a GPU and a CUDA build of kdekit._C, the kernels against the CPU kernels, float64 torch/numpy/scipy
references and fp64 gradcheck, plus determinism and argument checks."""
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension

from kdekit import _ext

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
# CPU only: on CUDA tensors labels and the training loss run the torch path around the CUDA/Triton histogram and
# kde2d_solve kernels, and pseudo_observations its stable argsort
NO_CUDA_OPS = {"kde2d_points", "soft_kde2d_pooled", "soft_kde2d_pooled_backward", "subset_means",
               "subset_means_backward"}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def test_every_differentiable_op_has_a_cuda_registration():
    defined = set(re.findall(r'm\.def\("(\w+)\(', (ROOT / "csrc" / "kdekit.cpp").read_text()))
    registered = []
    for f in sorted(CUDA_DIR.glob("*.cu")):
        text = f.read_text()
        assert "TORCH_LIBRARY_IMPL(kdekit, CUDA, m)" in text, f.name
        registered += re.findall(r'm\.impl\("(\w+)"', text)
    assert sorted(registered) == sorted(defined - NO_CUDA_OPS)


# source -> (host functions and kernel instantiations its object must define, an op name it registers)
NVCC_CASES = {
    "ccc.cu": (["ccc_cuda(", "ccc_backward_cuda("] + [f"ccc_{d}<{t}>(" for d in ("fwd", "bwd")
                                                      for t in ("float", "double", "c10::Half", "c10::BFloat16")],
               "ccc_backward"),
    "diffusion_kde.cu": (["kde2d_solve_cuda(", "kde2d_solve_kernel(", "k2_powers("], "kde2d_solve"),
}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(NVCC_CASES))
def test_nvcc_check_builds_registration_and_kernels(source, tmp_path):
    run = subprocess.run([sys.executable, str(CUDA_DIR / "nvcc_check.py"), "--out-dir", str(tmp_path),
                          str(CUDA_DIR / source)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    command, *diagnostics = run.stdout.strip().splitlines()
    assert diagnostics == [] and run.stderr == ""  # --Werror all-warnings: no output but the command itself
    command = shlex.split(command)
    standard = runpy.run_path(str(CUDA_DIR / "nvcc_check.py"))["cxx_standard_flag"]()  # cpp_extension's choice
    assert {standard, "-arch=sm_90", "all-warnings", f"-I{torch.utils.cpp_extension.include_paths()[0]}"} \
        <= set(command)
    obj = tmp_path / f"{source}.o"
    symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "TORCH_LIBRARY_IMPL_static_init_kdekit_CUDA" in symbols
    names, op = NVCC_CASES[source]
    for name in names:
        assert name in symbols, name
    sections = subprocess.run(["readelf", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    assert ".nv_fatbin" in sections  # device code embedded
    assert op in obj.read_bytes().decode("latin-1")  # the registered op name


# ---- on a GPU -------------------------------------------------------------------------------------------------------

needs_cuda_kernels = pytest.mark.skipif(not (torch.cuda.is_available() and _ext.has_kernel("ccc", "CUDA")),
                                        reason="needs a CUDA device and kdekit._C built with its CUDA kernels")


def gpu(test):
    """A test of the CUDA kernels: marked ``gpu``, skipped without a device, fresh buffers NaN-filled."""
    return pytest.mark.gpu(pytest.mark.usefixtures("nan_filled_buffers")(needs_cuda_kernels(test)))


ops = torch.ops.kdekit


def _ranges(B, device, lo=-1.0, hi=1.0):
    return torch.tensor([[lo, hi]], dtype=torch.float64, device=device).expand(B, 2).contiguous()


def _points(B, N, seed):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(B, 1, 2, generator=g, dtype=torch.float64) - 0.5
    pts = (centre + 0.4 * torch.randn(B, N, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return pts[..., 0].contiguous(), pts[..., 1].contiguous(), torch.rand(B, N, generator=g, dtype=torch.float64)


def _close(actual, expected, dtype, tol):
    """actual (any device/dtype) ~ float64 expected, relative to expected's largest magnitude, per-dtype tolerance."""
    scale = expected.abs().max().clamp(min=1e-300)
    torch.testing.assert_close(actual.cpu().double() / scale, expected / scale, **tol[dtype], equal_nan=True)


def _grads(fn, inputs):
    """Output and gradients (of a fixed random weighting of the output) of fn at inputs."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    weight = torch.rand(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (out.double() * weight.to(out.device)).sum().backward()
    return out.detach(), [t.grad for t in leaves]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_histogram_cuda_matches_cpu_float64(dtype, tol):
    x, y, w = (t.to(dtype) for t in _points(3, 41, seed=1))  # rounded once: the reference sees the same inputs
    r = _ranges(3, "cpu")
    bins, s = 20, 8.0
    out, grads = _grads(lambda a, b, c: ops.soft_histogram2d(a, b, c, r.cuda(), r.cuda(), bins, s),
                        [t.cuda() for t in (x, y, w)])
    ref, ref_grads = _grads(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, bins, s),
                            [t.double() for t in (x, y, w)])
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    _close(out, ref, dtype, tol)
    for g, rg in zip(grads, ref_grads):
        _close(g, rg, dtype, tol)


@gpu
def test_soft_histogram_cuda_gradcheck():
    x, y, w = (t.cuda() for t in _points(2, 9, seed=2))
    r = _ranges(2, "cuda")
    args = [t.requires_grad_() for t in (x, y, w)]
    assert torch.autograd.gradcheck(lambda a, b, c: ops.soft_histogram2d(a, b, c, r, r, 7, 5.0), args)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_histogram_cuda_equals_cpu_and_numpy(dtype):
    g = np.random.default_rng(3)
    x, y, w = g.uniform(-1.2, 1.2, (4, 600)), g.uniform(-1.2, 1.2, (4, 600)), g.random((4, 600))
    x[:, :5] = np.linspace(-1, 1, 5)  # exact edges, both ends
    y[:, :5] = [-1, -0.5, 0, 0.5, 1.0]
    x[0, 7] = np.nan
    x, y, w = (torch.tensor(a).to(dtype) for a in (x, y, w))
    r = _ranges(4, "cpu")
    out = ops.hard_histogram2d(x.cuda(), y.cuda(), w.cuda(), r.cuda(), r.cuda(), 16).cpu()
    # same bins and the same summation order (each cell summed by one thread in point order) as the CPU kernel
    torch.testing.assert_close(out, ops.hard_histogram2d(x, y, w, r, r, 16), rtol=0, atol=0)
    for b in range(4):
        ref = np.histogram2d(x[b].double().numpy(), y[b].double().numpy(), bins=16, range=((-1, 1), (-1, 1)),
                             weights=w[b].double().numpy())[0]
        np.testing.assert_allclose(out[b].double().numpy(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-12)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_histogram_cuda_weight_gradient(dtype, tol):
    x, y, w = (t.to(dtype) for t in _points(3, 50, seed=4))
    x[0, :3] = 5.0  # outside: no gradient
    r = _ranges(3, "cpu")
    out, (gw,) = _grads(lambda c: ops.hard_histogram2d(x.cuda(), y.cuda(), c, r.cuda(), r.cuda(), 8), [w.cuda()])
    ref, (rgw,) = _grads(lambda c: ops.hard_histogram2d(x.double(), y.double(), c, r, r, 8), [w.double()])
    _close(out, ref, dtype, tol)
    _close(gw, rgw, dtype, tol)
    assert (gw[0, :3] == 0).all()


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unbiased", [False, True])
def test_ccc_cuda_matches_cpu_float64(dtype, unbiased, tol):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 300, generator=g, dtype=torch.float64)
    y = (0.6 * x + 0.5 * torch.randn(5, 300, generator=g, dtype=torch.float64) + 0.3).to(dtype)
    x = x.to(dtype)
    out, grads = _grads(lambda a, b: ops.ccc(a, b, unbiased), [x.cuda(), y.cuda()])
    ref, ref_grads = _grads(lambda a, b: ops.ccc(a, b, unbiased), [x.double(), y.double()])
    _close(out, ref, dtype, tol)
    for gr, rg in zip(grads, ref_grads):
        _close(gr, rg, dtype, tol)


@gpu
def test_ccc_cuda_gradcheck_and_undefined_rows():
    g = torch.Generator().manual_seed(6)
    x, y = (torch.randn(3, 11, generator=g, dtype=torch.float64).cuda().requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b: ops.ccc(a, b, True), [x, y])
    const = torch.ones(2, 4, dtype=torch.float64, device="cuda")
    assert ops.ccc(const, const, False).isnan().all()  # zero variance and no mean difference: undefined
    gx, gy = ops.ccc_backward(torch.ones(2, dtype=torch.float64, device="cuda"), const, const, False)
    assert (gx == 0).all() and (gy == 0).all()  # as the CPU kernel: no gradient through an undefined item
    assert ops.ccc(const[:, :1], const[:, :1], True).isnan().all()  # N = 1 with ddof 1


def _divergence_ref(p, q, kind):
    """float64 torch reference (strictly positive inputs)."""
    if kind == "kl":
        return (p * torch.log(p / q)).sum(-1)
    if kind == "jsd":
        m = 0.5 * (p + q)
        return 0.5 * ((p * torch.log(p / m)).sum(-1) + (q * torch.log(q / m)).sum(-1))
    return 0.5 * (p - q).abs().sum(-1)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_divergence_cuda_matches_float64_reference(dtype, kind, tol):
    g = torch.Generator().manual_seed(8)
    p = torch.rand(4, 700, generator=g, dtype=torch.float64).add(0.05).to(dtype)
    q = torch.rand(4, 700, generator=g, dtype=torch.float64).add(0.05).to(dtype)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    out, grads = _grads(lambda a, b: ops.divergence(a, b, kind), [p.cuda(), q.cuda()])
    ref, ref_grads = _grads(lambda a, b: _divergence_ref(a, b, kind), [p.double(), q.double()])
    _close(out, ref, dtype, tol)
    for gr, rg in zip(grads, ref_grads):
        _close(gr, rg, dtype, tol)


@gpu
@pytest.mark.parametrize("kind", ["kl", "jsd"])
def test_divergence_cuda_zero_entries_match_cpu(kind):
    p = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    out, grads = _grads(lambda a, b: ops.divergence(a, b, kind), [p.cuda(), q.cuda()])
    ref, ref_grads = _grads(lambda a, b: ops.divergence(a, b, kind), [p, q])
    torch.testing.assert_close(out.cpu(), ref, atol=1e-12, rtol=1e-12)
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr.cpu(), rg, atol=1e-12, rtol=1e-12, equal_nan=True)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_divergence_cuda_flags_rows_with_bad_entries_like_cpu(dtype, kind):
    """kl/jsd: a row with an infinite, NaN or negative entry is NaN with a zero gradient; tvd takes any reals."""
    p = torch.tensor([[0.2, 0.3, 0.5], [0.2, float("inf"), 0.5], [0.2, 0.3, 0.5], [0.6, 0.4, -0.1],
                      [0.0, 0.5, 0.5]], dtype=dtype)
    q = torch.tensor([[0.3, 0.3, 0.4], [0.3, 0.3, 0.4], [0.3, float("nan"), 0.4], [0.3, 0.3, 0.4],
                      [0.5, 0.5, 0.0]], dtype=dtype)
    out, grads = _grads(lambda a, b: ops.divergence(a, b, kind), [p.cuda(), q.cuda()])
    ref, ref_grads = _grads(lambda a, b: ops.divergence(a, b, kind), [p, q])
    if kind != "tvd":
        assert out[1:4].isnan().all() and not out[[0, 4]].isnan().any()
        assert all((g[1:4] == 0).all() for g in grads)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.cpu(), ref, rtol=rtol, atol=rtol, equal_nan=True)
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr.cpu(), rg, rtol=rtol, atol=rtol, equal_nan=True)


@gpu
@pytest.mark.parametrize("kind", ["kl", "jsd", "tvd"])
def test_divergence_cuda_gradcheck(kind):
    g = torch.Generator().manual_seed(9)
    p, q = (torch.rand(3, 6, generator=g, dtype=torch.float64).add(0.1).cuda().requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda a, b: ops.divergence(a, b, kind), [p, q])


@gpu
def test_cuda_kernels_are_deterministic_on_noncontiguous_inputs_and_side_streams():
    x, y, w = (t.cuda().float() for t in _points(6, 2000, seed=10))
    r = _ranges(6, "cuda")
    xt = torch.stack([x, x], -1)[..., 0]  # non-contiguous view
    assert not xt.is_contiguous()
    calls = [lambda: ops.soft_histogram2d(xt, y, w, r, r, 32, 8.0),
             lambda: ops.hard_histogram2d(xt, y, w, r, r, 32),
             lambda: ops.ccc(xt, y, False),
             lambda: ops.divergence(w.softmax(-1), w.flip(-1).softmax(-1), "jsd")]
    stream = torch.cuda.Stream()
    for call in calls:
        first = call()
        with torch.cuda.stream(stream):
            again = call()
        stream.synchronize()
        assert torch.equal(first, again)


def _kde_histograms(n, seed, N=40):
    """Hard histograms (8, n, n) float64 on [-1, 1]^2 of N points per item, two items each: clusters (solved),
    uniform points (mostly no sign change on [0, 0.1]), Likert ratings and identical points (ties: tiny t*)."""
    g = np.random.default_rng(seed)
    cluster = g.uniform(-0.5, 0.5, (2, 1, 2)) + 0.15 * g.standard_normal((2, N, 2))
    uniform = g.uniform(-1, 1, (2, N, 2))
    likert = g.integers(0, 5, (2, N, 2)) / 2 - 1
    same = np.broadcast_to(g.uniform(-0.9, 0.9, (2, 1, 2)), (2, N, 2))
    pts = torch.tensor(np.concatenate([cluster, uniform, likert, same]).clip(-1, 1))
    x, y = pts[..., 0].contiguous(), pts[..., 1].contiguous()
    r = _ranges(8, "cpu")
    return ops.hard_histogram2d(x, y, torch.ones_like(x), r, r, n)


def _kde_spectra(n, seed, N=40):
    """kde2d_solve's inputs for :func:`_kde_histograms` (halved DCT spectra (13, n, n), counts), the last five items
    degenerate (status 3): all-zero spectrum, a NaN entry, an inf entry, count 0, count -1."""
    from kdekit.ops.dct import dct2

    a = dct2(_kde_histograms(n, seed, N) / N)
    a[:, 0, :] *= 0.5
    a[:, :, 0] *= 0.5
    bad = a[:3].clone()
    bad[0] = 0.0
    bad[1, 1, 1] = float("nan")
    bad[2, 0, 1] = float("inf")
    count = torch.full((13,), float(N), dtype=torch.float64)
    count[-2:] = torch.tensor([0.0, -1.0])
    return torch.cat([a, bad, a[:2]]).contiguous(), count


EPS4 = 4 * float(np.finfo(float).eps)
SOLVE = (0.1, 2e-12, EPS4)  # t_max, xtol, rtol of diffusion_kde2d (kde_diffusion's brentq)


@gpu
@pytest.mark.parametrize("n", [16, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kde2d_solve_cuda_matches_cpu(n, dtype):
    spectrum, count = _kde_spectra(n, seed=n)
    spectrum = spectrum.to(dtype)  # both kernels widen to float64
    for maxiter, expected in ((100, {0, 1, 3}), (3, {1, 2, 3})):  # maxiter 3: solvable items stop with status 2
        times, status = ops.kde2d_solve(spectrum.cuda(), count.cuda(), *SOLVE, maxiter)
        ref_times, ref_status = ops.kde2d_solve(spectrum, count, *SOLVE, maxiter)
        assert expected <= set(ref_status.tolist())
        assert times.device.type == "cuda" and times.dtype == torch.float64 and status.dtype == torch.int32
        assert torch.equal(status.cpu(), ref_status)
        assert (status[-5:] == 3).all()
        # same brentq iterates; psi sums differ only in summation order and exp/pow rounding
        torch.testing.assert_close(times.cpu(), ref_times, rtol=1e-11, atol=0, equal_nan=True)
        assert times[status != 0].isnan().all() and not times[status == 0].isnan().any()


@gpu
def test_kde2d_solve_cuda_is_deterministic_on_noncontiguous_input_and_side_stream():
    spectrum, count = _kde_spectra(64, seed=12)
    view, count = spectrum.cuda().transpose(1, 2), count.cuda()  # the x/y-swapped spectra, a non-contiguous view
    assert not view.is_contiguous()
    first = ops.kde2d_solve(view.contiguous(), count, *SOLVE, 100)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        again = ops.kde2d_solve(view, count, *SOLVE, 100)
    stream.synchronize()
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    ref_times, ref_status = ops.kde2d_solve(spectrum.transpose(1, 2), count.cpu(), *SOLVE, 100)
    assert torch.equal(first[1].cpu(), ref_status)
    torch.testing.assert_close(first[0].cpu(), ref_times, rtol=1e-11, atol=0, equal_nan=True)


@gpu
def test_diffusion_kde2d_binned_on_cuda_solves_with_the_cuda_kernel(monkeypatch):
    from kdekit.ops.diffusion_kde import diffusion_kde2d_binned

    hist = _kde_histograms(64, seed=14)
    limits = ((-1.0, 1.0), (-1.0, 1.0))
    ref = diffusion_kde2d_binned(hist, 40, limits)
    devices = []
    solve = ops.kde2d_solve

    def spy(spectrum, *args):
        devices.append(spectrum.device.type)
        return solve(spectrum, *args)

    monkeypatch.setattr(ops, "kde2d_solve", spy)
    out = diffusion_kde2d_binned(hist.cuda(), 40, limits)
    assert devices == ["cuda"]
    assert torch.equal(out.status.cpu(), ref.status)
    assert {0, 1} <= set(ref.status.tolist())  # kernel roots and items passed on to the torch fallback
    torch.testing.assert_close(out.t.cpu(), ref.t, rtol=1e-10, atol=0)
    torch.testing.assert_close(out.bandwidth.cpu(), ref.bandwidth, rtol=1e-10, atol=0)
    scale = ref.density.abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(out.density.cpu() / scale, ref.density / scale, rtol=0, atol=1e-9)


@gpu
def test_cuda_argument_errors_name_the_argument():
    x, y, w = (t.cuda() for t in _points(2, 5, seed=11))
    r = _ranges(2, "cuda")
    with pytest.raises(RuntimeError, match="y must be on"):
        ops.ccc(x, y.cpu(), False)
    with pytest.raises(RuntimeError, match="range_x must be float64"):
        ops.hard_histogram2d(x, y, w, r.float(), r, 8)
    with pytest.raises(RuntimeError, match="weights must have shape"):
        ops.soft_histogram2d(x, y, w[:, :3], r, r, 8, 8.0)
    with pytest.raises(RuntimeError, match="x must be float16, bfloat16, float32 or float64"):
        ops.ccc(x.int(), y.int(), False)
    with pytest.raises(RuntimeError, match="kind must be"):
        ops.divergence(x, y, "hellinger")
    spectrum, count = (t.cuda() for t in _kde_spectra(8, seed=15))
    with pytest.raises(RuntimeError, match="count must be on"):
        ops.kde2d_solve(spectrum, count.cpu(), *SOLVE, 100)
    with pytest.raises(RuntimeError, match="spectrum must be float32 or float64"):
        ops.kde2d_solve(spectrum.int(), count, *SOLVE, 100)
    with pytest.raises(RuntimeError, match=r"spectrum must be \(B, n, n\)"):
        ops.kde2d_solve(spectrum[:, :3], count, *SOLVE, 100)
    with pytest.raises(RuntimeError, match="t_max must be positive"):
        ops.kde2d_solve(spectrum, count, 0.0, 2e-12, EPS4, 100)
    with pytest.raises(RuntimeError, match="bins <= 256"):
        ops.soft_histogram2d_backward(torch.zeros(2, 300, 300, device="cuda", dtype=x.dtype), x, y, w, r, r, 300,
                                      8.0)
