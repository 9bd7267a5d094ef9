"""Backend reporting, forcing (env var and context manager) and dispatch rules, and the tests' NaN-filled buffers.
Each op's values and gradients under every backend are checked in its own file (test_<op>.py)."""
import pytest
import torch

import kdekit._backend as backend_mod
from kdekit._backend import backends, forced_backend, select, use_backend


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


def test_forced_triton_runs_float64_on_the_torch_path_and_unimplemented_backends_too(monkeypatch):
    """Triton kernels accumulate in float32: a forced ``triton`` sends float64 inputs to the torch path; a forced
    backend that an op does not implement runs the op's torch path (neither raises)."""
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    with use_backend("triton"):
        assert select(torch.zeros(1, dtype=torch.float64), ("torch", "triton")) == "torch"
    with use_backend("cuda"):
        assert select(torch.zeros(1), ("torch", "cpp")) == "torch"


def test_forcing_an_unusable_backend_raises(monkeypatch):
    monkeypatch.delenv("KDEKIT_BACKEND", raising=False)
    if not backends()["cuda"][0]:
        with use_backend("cuda"), pytest.raises(RuntimeError, match="'cuda' was forced but is unavailable"):
            select(torch.zeros(1), ("torch", "cuda"))
    monkeypatch.setattr(backend_mod._ext, "LOADED", False)
    with use_backend("cpp"), pytest.raises(RuntimeError, match="'cpp' was forced but is unavailable"):
        select(torch.zeros(1), ("torch", "cpp"))


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


def test_nan_filled_buffers_poison_fresh_tensors(nan_filled_buffers):
    """The fixture the kernel tests use: fresh floating buffers are NaN until written."""
    assert torch.empty(5).isnan().all() and torch.empty_like(torch.ones(3, dtype=torch.float64)).isnan().all()
    assert torch.ones(2).new_empty(4).isnan().all()
