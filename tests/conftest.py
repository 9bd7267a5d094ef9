"""Test-wide settings: Triton interpreter on CPU, no hub access, NaN-poisoned fresh buffers, hypothesis profile."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit runs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (nan_filled_buffers on a GPU)

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("kdekit", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("kdekit")

TOLERANCES = {
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=1e-2),
    torch.bfloat16: dict(atol=1e-2, rtol=5e-2),
}


@pytest.fixture
def tol():
    """Per-dtype (atol, rtol) for comparing an op against its float64 reference."""
    return TOLERANCES


@pytest.fixture
def nan_filled_buffers(request):
    """Deterministic mode for the test: fresh buffers (torch.empty in the Triton launchers, at::empty in the C++ and
    CUDA kernels) are then NaN-filled, so an output element a kernel leaves unwritten fails the comparisons. Warn-only:
    torch ops without a deterministic CUDA implementation still run. A test marked ``unfilled_buffers`` opts out (it
    checks that a kernel writes NaN itself, which a NaN-filled buffer would hide)."""
    if request.node.get_closest_marker("unfilled_buffers") is not None:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)
