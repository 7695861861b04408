"""Argument checks of the CPU kernels: the shared checks (`minifuse/kernels/checks.py`, one
wording for both backends) bound to NumPy arrays of float32 or float64.

The kernels do no bounds checks (that is what lets them vectorize), so every shape, dtype,
contiguity and `out` problem must be caught in Python first.
"""
import numpy as np

from .. import checks as shared
from ..checks import flat_rows, key_mask_values, rows  # noqa: F401  (this backend's names for them)

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _numpy(fn, name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: '{name}' must be a numpy.ndarray, got {type(a).__name__}")
    return np


CHECKS = shared.ArrayChecks(DTYPES, _numpy)   # one place: no devices to compare
