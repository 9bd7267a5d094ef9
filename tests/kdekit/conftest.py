"""Fixtures of the kdekit tests: fresh buffers NaN-filled in every test, the torch/cpp ``backend`` fixture and a
one-thread mode. The (backend, dtype) parametrisations and the device helpers are in ``tests/kdekit/helpers.py``."""
import pytest
import torch

import kdekit
from tests.kdekit.helpers import backends


@pytest.fixture(autouse=True)
def _fresh_buffers_are_nan(nan_filled_buffers):
    """Every kdekit test runs with NaN-filled fresh buffers (``nan_filled_buffers``; ``unfilled_buffers`` opts out),
    so an output element a kernel leaves unwritten shows as NaN instead of passing by chance."""
    yield


@pytest.fixture(params=backends(("torch", "cpp")))
def backend(request):
    """Runs the test under each backend of the diffusion-KDE pipeline that takes CPU tensors: "torch" (the
    reference) and "cpp" (kdekit._C; a skip naming the reason where it is not built)."""
    with kdekit.use_backend(request.param):
        yield request.param


@pytest.fixture
def one_thread():
    """2 shared cores: intra-op threads only add contention for these small batched ops."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
