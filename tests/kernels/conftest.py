"""The kernel tests run on every backend (tests/backends.py): `backend` alone is the fixture of
tests/conftest.py; `backend` with `dtype` runs each backend on each of its dtypes."""
import pytest

from backends import parametrize_dtypes, quiet


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    parametrize_dtypes(metafunc)


@pytest.fixture(autouse=True)
def _quiet():
    # the simulator evaluates math.exp on NumPy scalars, which warn on overflow to inf; the
    # references compute with inf and NaN on purpose
    with quiet():
        yield
