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
