"""sermodels tests: caches that outlive a run (audio durations) go to a temporary folder, not the user's."""
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_sermodels_cache(tmp_path_factory):
    before = os.environ.get("SERMODELS_CACHE")
    os.environ["SERMODELS_CACHE"] = str(tmp_path_factory.mktemp("sermodels-cache"))
    yield
    if before is None:
        del os.environ["SERMODELS_CACHE"]
    else:
        os.environ["SERMODELS_CACHE"] = before


@pytest.fixture(scope="session")
def paper_hub(tmp_path_factory):
    """The papers' hub ids, offline: ``huggingface_hub`` reads a cache of tiny random-init models of the same
    architectures (``tests/sermodels/hub.py``), so the papers' configs load their exact model ids through the real
    ``from_pretrained``."""
    import huggingface_hub.constants
    from hub import write_hub

    cache = write_hub(tmp_path_factory.mktemp("hub"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): float
    sums then have one order, so reruns compare exactly and asserted numbers do not move; and 2 shared cores stay
    usable."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
