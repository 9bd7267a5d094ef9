"""Fixtures of the kdekit tests: the torch/cpp backend parametrisation and a one-thread mode."""
import pytest
import torch

import kdekit

BACKENDS = [name for name in ("torch", "cpp") if kdekit.backends()[name][0]]  # cpp where kdekit._C is built


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test under each available backend: "torch" (the reference) and "cpp" (kdekit._C)."""
    with kdekit.use_backend(request.param):
        yield request.param


@pytest.fixture
def one_thread():
    """2 shared cores: intra-op threads only add contention for these small batched ops."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
