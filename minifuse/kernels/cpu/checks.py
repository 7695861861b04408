"""Argument checks of the CPU kernels: the shared checks (`minifuse/kernels/checks.py`, one
wording for both backends) bound to NumPy arrays of float32 or float64.

The kernels do no bounds checks (that is what lets them vectorize), so every shape, dtype,
contiguity and `out` problem must be caught in Python first. Here `dtype` = (name0, dtype0) names
the argument whose dtype all others must share; an array in its place works too.
"""
import numpy as np

from .. import checks as shared
from ..checks import c_contiguous, choice, shape  # noqa: F401  (this backend's names for them)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _numpy(fn, name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: '{name}' must be a numpy.ndarray, got {type(a).__name__}")
    return np


CHECKS = shared.ArrayChecks(FLOAT_DTYPES, _numpy)   # one place: no devices to compare

vector = CHECKS.vector      # (fn, name, a, size, meaning, dtype)
output = CHECKS.output      # (fn, out, expected, dtype, inputs=())


def float_array(fn, name, a, ndim=None, min_ndim=None, dtype=None):
    """`a` is a float32/float64 ndarray (of `dtype`, when given, naming the dtype's source).
    Returns `a`."""
    CHECKS.float_array(fn, name, a, ndim, min_ndim, dtype)
    return a


def rows(a, last):
    """The (N, last) C-contiguous 2-D view of `a` (..., last); copies only a non-contiguous `a`."""
    return shared.rows(np, a, last)
