"""Argument checks of the CUDA kernels: the shared checks (`minifuse/kernels/checks.py`, one
wording for both backends) bound to CuPy arrays (NumPy arrays under the simulator) of float16,
float32 or float64, all on one GPU.

The kernels index without bounds checks, so shapes, dtypes, contiguity, the device and `out` are
all checked in Python first. Here `like` = (name0, a0) names the argument whose dtype, array
module and GPU all others must share; `float_array` returns the array module.
"""
import numpy as np

from .. import checks as shared
from ..checks import c_contiguous, choice, contiguous, rows, shape  # noqa: F401  (this backend's names for them)
from .runtime import xp_for

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _device_id(a):
    """The GPU a CuPy array is on; -1 for a NumPy array (the simulator, or a host array)."""
    return a.device.id if hasattr(a, "device") and hasattr(a.device, "id") else -1


CHECKS = shared.ArrayChecks(FLOAT_DTYPES, xp_for, _device_id)

float_array = CHECKS.float_array    # (fn, name, a, ndim=None, min_ndim=None, like=None) -> xp
vector = CHECKS.vector              # (fn, name, a, size, meaning, like)
output = CHECKS.output              # (fn, out, expected, like, inputs=())


def key_mask(fn, mask, batch, keys, like):
    """key_mask (B, Sk) of bool/int/float, or None. A host (NumPy) mask given with CuPy
    arrays is copied to their GPU (not allowed while a CUDA graph is being captured)."""
    if mask is None:
        return None
    name0, a0 = like
    xp = xp_for(fn, name0, a0)
    if isinstance(mask, np.ndarray) and xp is not np:
        with xp.cuda.Device(_device_id(a0)):
            mask = xp.asarray(mask)
    if xp_for(fn, "key_mask", mask) is not xp or _device_id(mask) != _device_id(a0):
        raise ValueError(f"{fn}: 'key_mask' must be on the device of '{name0}'")
    shared.key_mask_values(fn, mask, batch, keys)
    return mask


def scale(fn, value):
    return float(shared.real_number(fn, "scale", value))
