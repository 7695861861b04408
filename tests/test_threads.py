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


def _blas_counts():
    return [n for _, n in threads.blas_libraries()]


@pytest.fixture
def blas_found():
    if not threads.blas_libraries():
        pytest.skip("no OpenBLAS found to set")


def test_single_threaded_blas_sets_one_thread_and_restores(restore_threads, blas_found):
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    before = _blas_counts()
    with threads.single_threaded_blas():
        assert _blas_counts() == [1] * len(before)
        with threads.single_threaded_blas():            # nested: still one, restored only at the end
            pass
        assert _blas_counts() == [1] * len(before)
    assert _blas_counts() == before
    with pytest.raises(RuntimeError), threads.single_threaded_blas():
        raise RuntimeError("the counts come back on an error too")
    assert _blas_counts() == before


def test_set_num_threads_inside_a_single_threaded_block_applies_at_its_end(restore_threads, blas_found):
    with threads.single_threaded_blas():
        mf.set_num_threads(1)
        assert mf.get_num_threads() == 1                # Numba's count at once
    assert _blas_counts() == [1] * len(_blas_counts())
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert _blas_counts() == [numba.config.NUMBA_NUM_THREADS] * len(_blas_counts())


def test_single_threaded_blocks_overlapping_across_threads_restore_once_all_end(restore_threads, blas_found):
    import threading
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    before = _blas_counts()
    inside, leave = threading.Event(), threading.Event()

    def other():
        with threads.single_threaded_blas():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    with threads.single_threaded_blas():
        t.start()
        assert inside.wait(10)
    assert _blas_counts() == [1] * len(before)          # the other thread's block is still open
    leave.set()
    t.join(10)
    assert _blas_counts() == before


def test_attention_products_run_with_blas_at_one_thread(restore_threads, blas_found, monkeypatch):
    from minifuse.kernels import cpu
    from minifuse.kernels.cpu import batched
    from minifuse.kernels.cpu.packing import attend_varlen, pack_offsets
    monkeypatch.setattr(batched, "POOL_MIN_WORK", 0)       # these small products too go to the pool
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    seen = []
    matmul = np.matmul

    def spy(*args, **kw):
        seen.append(_blas_counts())
        return matmul(*args, **kw)

    monkeypatch.setattr(np, "matmul", spy)            # the kernels' Python code calls np.matmul
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((2, 8, 3 * 16)).astype(np.float32)
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3])
    cpu.attention_packed(qkv, mask, 2, 0.25, method="bmm")
    pk = pack_offsets("test", mask, 2, 8, ("qkv", qkv))
    rows = qkv.reshape(16, -1)[pk.index]
    attend_varlen(rows, pk, 2, 0.25, "bmm", np.empty((pk.tokens, 16), np.float32))
    assert len(seen) >= 4 and all(counts == [1] * len(counts) for counts in seen)
    assert _blas_counts() == [numba.config.NUMBA_NUM_THREADS] * len(_blas_counts())


@pytest.mark.parametrize("lead", [(), (0,), (1,), (5,), (13,), (2, 3), (1, 7), (3, 0), (9, 2)])
@pytest.mark.parametrize("threads_", [1, None])
@pytest.mark.parametrize("pool_min_work", [0, None])
def test_batched_matmul_is_numpy_matmul(restore_threads, lead, threads_, pool_min_work, monkeypatch):
    """The chunked products on the thread pool (and small ones in the caller's thread) equal
    np.matmul, on strided views too, and the chunks cover every leading index once."""
    from minifuse.kernels.cpu import batched
    if pool_min_work is not None:
        monkeypatch.setattr(batched, "POOL_MIN_WORK", pool_min_work)
    mf.set_num_threads(threads_ or numba.config.NUMBA_NUM_THREADS)
    rng = np.random.default_rng(1)
    a = rng.standard_normal(lead + (4, 6))[..., ::2]                 # (.., 4, 3), strided
    b = rng.standard_normal(lead + (3, 5))
    out = batched.matmul(a, b, np.empty(lead + (4, 5)))
    np.testing.assert_array_equal(out, np.matmul(a, b))
    for pieces in (1, 2, 3, 8, 100):
        hits = np.zeros(lead, int)
        for s in batched.chunks(lead, pieces):
            hits[s] += 1
        assert (hits == 1).all()


def test_batched_run_reraises_a_task_error(restore_threads):
    from minifuse.kernels.cpu import batched
    mf.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    def fail():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        batched.run([lambda: None, fail, lambda: None])
    with pytest.raises(ValueError, match="boom"):               # small: in the caller's thread
        batched.run([lambda: None, fail], work=1)


_TIMEOUTS = """
import ctypes, os
import numpy as np                  # loads OpenBLAS before minifuse
import minifuse as mf
from minifuse import threads
a = np.arange(40000, dtype=np.float64).reshape(200, 200) / 4e4
assert np.allclose(a @ a, np.einsum("ij,jk->ik", a, a))     # the stopped workers start again
for path in threads._openblas_paths():
    lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    if hasattr(lib, "openblas_thread_timeout"):
        print(lib.openblas_thread_timeout())
"""


@pytest.mark.parametrize("user_value", [None, "12"])
def test_openblas_loaded_before_minifuse_gets_the_thread_timeout(user_value):
    import os
    import subprocess
    import sys
    if not any("openblas" in p.lower() for p, _ in threads.blas_libraries()):
        pytest.skip("needs an OpenBLAS")
    env = dict(os.environ)
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    if user_value:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_value
    out = subprocess.run([sys.executable, "-c", _TIMEOUTS], env=env, capture_output=True, text=True, check=True)
    timeouts = out.stdout.split()
    assert timeouts and set(timeouts) == {user_value or threads.THREAD_TIMEOUT}
