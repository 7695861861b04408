"""Argument checks of the CUDA kernels: the shared checks (`minifuse/kernels/checks.py`, one
wording for both backends) bound to CuPy arrays (NumPy arrays under the simulator) of float16,
bfloat16 (where ml_dtypes is installed), float32 or float64, all on one GPU, with rows of at
most `blocks.MAX_ROW` elements in the row kernels.

The kernels index without bounds checks, so shapes, dtypes, contiguity, the device and `out` are
all checked in Python first.
"""
import numpy as np

from ...dtypes import bfloat16
from .. import checks as shared
from ..checks import flat_rows, key_mask_values, rows  # noqa: F401  (this backend's names for them)
from .blocks import MAX_ROW
from .runtime import device_id, host_to_device, xp_for

DTYPES = ((np.dtype(np.float16),) + (() if bfloat16 is None else (bfloat16,))
          + (np.dtype(np.float32), np.dtype(np.float64)))


CHECKS = shared.ArrayChecks(DTYPES, xp_for, device_id, MAX_ROW)


def key_mask(fn, mask, batch, keys, like):
    """key_mask (B, Sk) of bool/int/float, or None. A host (NumPy) mask given with CuPy
    arrays is copied to their GPU (not allowed while a CUDA graph is being captured)."""
    if mask is None:
        return None
    name0, a0 = like
    xp = xp_for(fn, name0, a0)
    if isinstance(mask, np.ndarray) and xp is not np:
        key_mask_values(fn, mask, batch, keys)     # first: CuPy refuses some NumPy dtypes (strings)
        mask = host_to_device(mask, mask.dtype, device_id(a0))
    if xp_for(fn, "key_mask", mask) is not xp or device_id(mask) != device_id(a0):
        raise ValueError(f"{fn}: 'key_mask' must be on the device of '{name0}'")
    key_mask_values(fn, mask, batch, keys)
    return mask
