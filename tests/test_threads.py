"""mf.set_num_threads / mf.get_num_threads: Numba's and the BLAS's thread counts together."""
import numba
import numpy as np
import pytest

import minifuse as mf
from minifuse import threads


@pytest.fixture
def restore_threads():
    before = mf.get_num_threads()
    yield
    mf.set_num_threads(before)


def test_set_num_threads_sets_numba_and_blas_together(restore_threads):
    mf.set_num_threads(1)
    assert mf.get_num_threads() == numba.get_num_threads() == 1
    assert all(n == 1 for _, n in threads.blas_libraries())
    x = mf.randn(64, 64)
    np.testing.assert_allclose((x @ x).numpy(), x.numpy() @ x.numpy(), rtol=1e-5)
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert mf.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    assert all(n == numba.config.NUMBA_NUM_THREADS for _, n in threads.blas_libraries())


def test_numpys_openblas_is_found_on_linux():
    import sys
    if sys.platform != "linux" or "openblas" not in str(np.__config__.CONFIG).lower():
        pytest.skip("the BLAS is set through /proc/self/maps and OpenBLAS's own functions")
    assert threads.blas_libraries(), "NumPy's OpenBLAS was not found"


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "2", 10 ** 6])
def test_bad_thread_counts_are_refused(n):
    with pytest.raises(ValueError, match=r"set_num_threads: n must be an integer in \[1, "):
        mf.set_num_threads(n)


def test_minifuse_num_threads_sets_the_default_at_import():
    import subprocess
    import sys
    code = "import minifuse as mf, numba; print(mf.get_num_threads(), numba.get_num_threads())"
    env = dict(__import__("os").environ, MINIFUSE_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
    env["MINIFUSE_NUM_THREADS"] = "zero"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "MINIFUSE_NUM_THREADS='zero'" in bad.stderr
