"""Backend reporting, forcing (env var and context manager) and dispatch; every available backend of each routed op
agrees with the torch reference in value and gradient."""
import pytest
import torch

import kdekit._backend as backend_mod
from kdekit._backend import backends, forced_backend, select, use_backend
from kdekit.ops.ccc import ccc
from kdekit.ops.divergence import jsd, kl, tvd
from kdekit.ops.hard_histogram import hard_histogram2d
from kdekit.ops.soft_histogram import soft_histogram2d

AVAILABLE = [name for name, (ok, _) in backends().items() if ok]


def test_backends_report_every_backend_with_a_reason():
    report = backends()
    assert set(report) == {"torch", "cpp", "cuda", "triton"}
    assert report["torch"][0] is True
    for ok, reason in report.values():
        assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if not torch.cuda.is_available():
        assert report["cuda"][0] is False


def test_use_backend_nests_and_restores(monkeypatch):
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    assert forced_backend() is None
    with use_backend("torch"):
        assert forced_backend() == "torch"
        with use_backend("triton"):
            assert forced_backend() == "triton"
        assert forced_backend() == "torch"
    assert forced_backend() is None
    with pytest.raises(ValueError, match="backend must be one of"):
        with use_backend("numpy"):
            pass


def test_env_var_forces_and_is_validated(monkeypatch):
    monkeypatch.setenv("KDEKIT_BACKEND", "torch")
    assert select(torch.zeros(1), ("torch", "cpp")) == "torch"
    monkeypatch.setenv("KDEKIT_BACKEND", "gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        forced_backend()


def test_default_dispatch_on_cpu(monkeypatch):
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    expected = "cpp" if backends()["cpp"][0] else "torch"
    assert select(torch.zeros(1), ("torch", "cpp", "triton")) == expected
    assert select(torch.zeros(1), ("torch",)) == "torch"  # op without kernels


def test_forcing_an_unusable_backend_raises(monkeypatch):
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    if not backends()["cuda"][0]:
        with use_backend("cuda"), pytest.raises(RuntimeError, match="'cuda' was forced but is unavailable"):
            select(torch.zeros(1), ("torch", "cuda"))
    monkeypatch.setattr(backend_mod._ext, "LOADED", False)
    with use_backend("cpp"), pytest.raises(RuntimeError, match="'cpp' was forced but is unavailable"):
        select(torch.zeros(1), ("torch", "cpp"))


def _points(dtype, B=3, N=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    y = (0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).clamp(-1, 1).to(dtype)
    return x, y


def _run(name, fn, *args):
    with use_backend(name):
        return fn(*args)


@pytest.mark.parametrize("name", [b for b in AVAILABLE if b != "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_histogram_backends_agree_with_torch_values_and_gradients(name, dtype, tol):
    x, y = _points(dtype, N=16 if name == "triton" else 17)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, -3:] = False
    x[1, -1] = float("nan")  # masked NaN must not leak

    def run(backend):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        w = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype).requires_grad_()
        h = _run(backend, lambda: soft_histogram2d(xs, ys, 16, ((-1, 1), (-1, 1)), 8.0, mask=mask, weights=w))
        cot = torch.linspace(-1, 1, h.numel(), dtype=dtype).reshape(h.shape)
        grads = torch.autograd.grad((h * cot).sum(), (xs, ys, w))
        return (h, *grads)

    for got, ref in zip(run(name), run("torch")):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, **tol[dtype])


@pytest.mark.parametrize("name", [b for b in AVAILABLE if b in ("torch", "cpp")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_hard_histogram_backends_agree(name, dtype):
    x, y = _points(dtype, N=40)
    w = torch.rand(x.shape, dtype=dtype, requires_grad=True)
    h = _run(name, lambda: hard_histogram2d(x, y, 8, ((-1, 1), (-1, 1)), weights=w))
    (g,) = torch.autograd.grad(h.sum(), w)
    ref = _run("torch", lambda: hard_histogram2d(x, y, 8, ((-1, 1), (-1, 1)), weights=w))
    assert h.dtype == dtype
    torch.testing.assert_close(h, ref, atol=1e-2 if dtype == torch.float16 else 1e-5, rtol=1e-3)
    torch.testing.assert_close(g, torch.ones_like(w).where((x.abs() <= 1) & (y.abs() <= 1), 0))


@pytest.mark.parametrize("name", [b for b in AVAILABLE if b != "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metric_backends_agree_with_torch_values_and_gradients(name, dtype, tol):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, 25, generator=g, dtype=dtype)
    b = (a + torch.randn(4, 3, 25, generator=g, dtype=dtype)).requires_grad_()
    a.requires_grad_()
    p = torch.softmax(torch.randn(5, 4, 4, generator=g, dtype=dtype), -1).requires_grad_()
    q = torch.softmax(torch.randn(5, 4, 4, generator=g, dtype=dtype), -1).requires_grad_()
    cases = [
        (lambda: ccc(a, b, dim=(0, 2)), (a, b)),
        (lambda: ccc(a, b, dim=-1, unbiased=True, keepdim=True), (a, b)),
        (lambda: kl(p, q, dim=(-2, -1)), (p, q)),
        (lambda: jsd(p, q, dim=-1, base=2), (p, q)),
        (lambda: tvd(p, q, dim=(0, 2), keepdim=True), (p, q)),
    ]
    for fn, inputs in cases:
        with torch.no_grad():  # the fused metric kernels serve evaluation; with grad the torch path runs
            torch.testing.assert_close(_run(name, fn), _run("torch", fn), **tol[dtype])
        got = _run(name, fn)
        ref = _run("torch", fn)
        torch.testing.assert_close(got, ref, **tol[dtype])
        cot = torch.rand(got.shape, generator=g, dtype=dtype)
        grads = torch.autograd.grad((got * cot).sum(), inputs), torch.autograd.grad((ref * cot).sum(), inputs)
        for gg, gr in zip(*grads):
            torch.testing.assert_close(gg, gr, **tol[dtype])


def test_probes_run_once_per_state_and_follow_triton_interpret(monkeypatch):
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(backend_mod, "_probed", {})
    calls = []
    probe = backend_mod._probe_triton
    monkeypatch.setattr(backend_mod, "_probe_triton", lambda interpret: calls.append(interpret) or probe(interpret))
    x = torch.zeros(2, device="cuda" if torch.cuda.is_available() else "cpu")
    for _ in range(3):
        select(x, ("torch", "cpp", "triton"))
        backends()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    interpreted_off = backends()["triton"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    interpreted_on = backends()["triton"]
    assert calls == [True, False]  # probed once per TRITON_INTERPRET value, not per call
    if interpreted_on[0]:  # triton importable
        assert "interpreter" in interpreted_on[1]
        assert interpreted_off[0] == torch.cuda.is_available()
