"""``mf.set_num_threads(n)`` / ``mf.get_num_threads()``: the CPU threads of the fused kernels
(Numba) and of the GEMMs (the BLAS that NumPy and SciPy load), set together.

Default: every core this process may use. Numba starts ``NUMBA_NUM_THREADS`` threads (all the
cores, unless the variable says otherwise) and OpenBLAS uses ``OPENBLAS_NUM_THREADS`` (all cores
by default); minifuse changes neither, unless ``MINIFUSE_NUM_THREADS=n`` is set, which
``import minifuse`` applies as ``set_num_threads(n)``. ``set_num_threads`` can lower Numba's count
to any n up to ``NUMBA_NUM_THREADS`` and sets OpenBLAS to the same n.

Why every core also on a busy machine: a parallel kernel or GEMM waits at its end for its
slowest thread, and a thread that shares a core with another process is descheduled for whole
time slices, so what a busy core costs grows with how often the threads must meet. The fused CPU
path keeps those meetings few: the many small per-head products of its attention run in chunks on
a pool of threads, each with BLAS at one thread (``kernels/cpu/batched.py`` inside
``single_threaded_blas``: handing each product of a few microseconds to the BLAS threads ends in a
wait for all of them, which on a busy machine meets a descheduled thread), and OpenBLAS's idle
threads sleep at once instead of spinning (``OPENBLAS_THREAD_TIMEOUT``,
``quiet_idle_blas_threads``, applied by ``import minifuse``). With those, the default keeps the
fused layer ahead of the unfused one with cores busy (BENCHMARKS.md, ``python -m
minifuse.bench.busy_cpu``), and a quiet machine gets all its cores. The large GEMMs still split their work into one fixed part per thread,
so when the number of free cores is known, ``set_num_threads(free cores)`` is faster still.

Scope: Numba's count is per calling thread (a thread that never calls ``set_num_threads`` uses
``NUMBA_NUM_THREADS``); the BLAS count is one setting for the whole process.

BLAS without threadpoolctl: the OpenBLAS libraries the process has loaded are found in
``/proc/self/maps`` (Linux) and set through their ``*_set_num_threads`` functions (the plain
``openblas_`` names and the ``scipy_openblas`` names of NumPy's and SciPy's wheels). Elsewhere,
or with another BLAS (MKL, Accelerate), only Numba's count changes: set ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` before starting Python. ``blas_libraries()`` says
what was found.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

__all__ = ["set_num_threads", "get_num_threads", "blas_libraries", "apply_environment", "single_threaded_blas",
           "quiet_idle_blas_threads"]

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads")
_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads")


def set_num_threads(n):
    """Use ``n`` threads for the fused CPU kernels and the GEMMs (1 <= n <= NUMBA_NUM_THREADS)."""
    import numba
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be an integer in [1, {limit}] (NUMBA_NUM_THREADS, the "
                         f"threads Numba started; set that variable before import for more), got {n!r}")
    numba.set_num_threads(n)
    with _single.lock:
        if _single.depth:              # applied when the last single_threaded_blas block ends
            _single.restore = n
        else:
            for _, lib in _blas():
                lib.set(ctypes.c_int(n))


def apply_environment():
    """``set_num_threads(MINIFUSE_NUM_THREADS)`` when the variable is set (at import)."""
    value = os.environ.get("MINIFUSE_NUM_THREADS", "")
    if not value:
        return
    try:
        set_num_threads(int(value))
    except ValueError as e:
        raise ValueError(f"MINIFUSE_NUM_THREADS={value!r}: {e}") from None


THREAD_TIMEOUT = "4"      # OpenBLAS: idle workers spin 2^4 cycles, then sleep
_TIMEOUT_FUNCTIONS = ("openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_")


def quiet_idle_blas_threads():
    """Make OpenBLAS's idle worker threads sleep at once after each call (``import minifuse``).

    By default each worker spins for 2^28 cycles (about 0.1 s) after a GEMM before it sleeps, so
    a parallel Numba kernel right after a GEMM shares its cores with spinning threads (on the
    2-core machine a bias + GELU sweep after a GEMM took 4.0 ms instead of 2.3 ms).
    ``OPENBLAS_THREAD_TIMEOUT=4`` (a value the user set wins) makes them sleep at once. OpenBLAS
    reads the variable when it loads, so one loaded earlier (``import numpy`` before
    ``import minifuse``) has not seen it: such a library re-reads its environment and its
    workers are stopped, to start again, with the new timeout, at its next threaded call
    (the same stop its own fork handler makes). Other BLAS libraries are left alone.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            continue
        if all(hasattr(lib, f) for f in _TIMEOUT_FUNCTIONS) and lib.openblas_thread_timeout() == 0:
            lib.openblas_read_env()
            lib.blas_thread_shutdown_()


def get_num_threads():
    """The number of threads the fused CPU kernels use in this thread (Numba's count)."""
    import numba
    return numba.get_num_threads()


class _Single:
    """The state of ``single_threaded_blas``, shared by all threads (the BLAS count is global)."""
    lock = threading.Lock()
    depth = 0           # blocks open, over all threads
    restore = None      # the count to set again when the last one ends (None: each library's own)
    before = ()         # [(library, its count before the first block)]


_single = _Single()


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with every loaded OpenBLAS at one thread, then restore their counts.

    For many small products in a row (the per-head products of attention): each is a few
    microseconds of work, so handing it to the BLAS threads costs about what they save, and on a
    machine with a busy core each hand-over waits for a descheduled thread. The count is global:
    a GEMM that another Python thread runs meanwhile runs on one thread too. Blocks may nest and
    overlap across threads; the counts come back when the last one ends, and a
    ``set_num_threads(n)`` inside one takes effect then.
    """
    with _single.lock:
        if _single.depth == 0:
            libs = _libraries()
            _single.before = [(lib, int(lib.get())) for lib in libs]
            _single.restore = None
            for lib in libs:
                lib.set(ctypes.c_int(1))
        _single.depth += 1
    try:
        yield
    finally:
        with _single.lock:
            _single.depth -= 1
            if _single.depth == 0 and _single.restore is None:
                for lib, n in _single.before:
                    lib.set(ctypes.c_int(n))
            elif _single.depth == 0:
                for _, lib in _blas():
                    lib.set(ctypes.c_int(_single.restore))


def blas_libraries():
    """[(path, threads)] of the OpenBLAS libraries that ``set_num_threads`` controls."""
    return [(path, int(lib.get())) for path, lib in _blas()]


class _Library:
    def __init__(self, cdll, setter, getter):
        self.set, self.get = getattr(cdll, setter), getattr(cdll, getter)
        self.get.restype = ctypes.c_int


_found = []


def _libraries():
    """``_blas()``'s libraries, found once (reading /proc/self/maps costs more than a small GEMM).
    NumPy's OpenBLAS is loaded before any kernel runs; a library loaded later (SciPy's) is not
    used by the products these blocks hold, and ``set_num_threads`` finds it anew."""
    if not _found:
        _found.append([lib for _, lib in _blas()])
    return _found[0]


def _blas():
    """The loaded OpenBLAS libraries with a thread setter (NumPy and SciPy each bring one)."""
    found = []
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            continue
        setter = next((s for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((g for g in _GETTERS if hasattr(lib, g)), None)
        if setter and getter:
            found.append((path, _Library(lib, setter, getter)))
    return found


def _openblas_paths():
    """The files of the OpenBLAS libraries this process has loaded (Linux; else none)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split(None, 5)[-1].strip() for line in f if "openblas" in line.lower()})
    except OSError:
        return []
    return [path for path in paths if os.path.isfile(path)]
