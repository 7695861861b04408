import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# The kernel backends (tests/backends.py): a test taking `backend` runs once per backend, ids
# 'cpu' and 'cuda' (skipped where neither the CUDA simulator nor a GPU is here).
from backends import PARAMS as _BACKENDS  # noqa: E402


@pytest.fixture(params=_BACKENDS)
def backend(request):
    return request.param
