"""``mf.set_num_threads(n)`` / ``mf.get_num_threads()``: the CPU threads of the fused kernels
(Numba) and of the GEMMs (the BLAS that NumPy and SciPy load), set together.

Default: every core this process may use. Numba starts ``NUMBA_NUM_THREADS`` threads (all the
cores, unless the variable says otherwise) and OpenBLAS uses ``OPENBLAS_NUM_THREADS`` (all cores
by default); minifuse changes neither, unless ``MINIFUSE_NUM_THREADS=n`` is set, which
``import minifuse`` applies as ``set_num_threads(n)``. ``set_num_threads`` can lower Numba's count
to any n up to ``NUMBA_NUM_THREADS`` and sets OpenBLAS to the same n.

On a machine where other processes keep cores busy, use the free cores only: a parallel Numba
kernel waits for its slowest thread, so one thread that shares a core with another process
slows the whole kernel down (BENCHMARKS.md: on an oversubscribed 2-core machine the fused layer
was 0.27x to 3.1x as fast as the unfused one with 2 threads, 1.4-2.0x with ``set_num_threads(1)``).

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

import ctypes
import os

__all__ = ["set_num_threads", "get_num_threads", "blas_libraries", "apply_environment"]

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


def get_num_threads():
    """The number of threads the fused CPU kernels use in this thread (Numba's count)."""
    import numba
    return numba.get_num_threads()


def blas_libraries():
    """[(path, threads)] of the OpenBLAS libraries that ``set_num_threads`` controls."""
    return [(path, int(lib.get())) for path, lib in _blas()]


class _Library:
    def __init__(self, cdll, setter, getter):
        self.set, self.get = getattr(cdll, setter), getattr(cdll, getter)
        self.get.restype = ctypes.c_int


def _blas():
    """The loaded OpenBLAS libraries with a thread setter (NumPy and SciPy each bring one)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split(None, 5)[-1].strip() for line in f if "openblas" in line.lower()})
    except OSError:
        return []
    found = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            continue
        setter = next((s for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((g for g in _GETTERS if hasattr(lib, g)), None)
        if setter and getter:
            found.append((path, _Library(lib, setter, getter)))
    return found
