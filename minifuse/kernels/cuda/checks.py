"""Argument checks at the Python boundary of the CUDA kernels.

The kernels index without bounds checks, so shapes, dtypes, contiguity, the device and `out`
are all checked here first, with a message that names the function, the argument, what was
expected and what came. Arrays are CuPy arrays (NumPy arrays under the simulator).
"""
import numpy as np

from .runtime import xp_for

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _device_id(a):
    return a.device.id if hasattr(a, "device") and hasattr(a.device, "id") else -1


def float_array(fn, name, a, ndim=None, min_ndim=None, like=None):
    """`a` is a float16/32/64 array of the kernel's array module; with `like = (name0, a0)` it
    must also share a0's dtype, module and GPU. Returns the array module."""
    xp = xp_for(fn, name, a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: '{name}' must be float16, float32 or float64, got {a.dtype}")
    if like is not None:
        name0, a0 = like
        if xp is not xp_for(fn, name0, a0) or _device_id(a) != _device_id(a0):
            raise ValueError(f"{fn}: '{name}' is on another device than '{name0}' "
                             f"({_device_id(a)} vs {_device_id(a0)}); move it with cupy.asarray "
                             f"under that device first")
        if a.dtype != a0.dtype:
            raise TypeError(f"{fn}: '{name}' has dtype {a.dtype}, expected {a0.dtype} (the dtype of "
                            f"'{name0}'; all arrays must share one dtype)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: '{name}' must be {ndim}-D, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{fn}: '{name}' needs at least {min_ndim} dims, got shape {a.shape}")
    return xp


def shape(fn, name, a, expected, meaning):
    """`a.shape == expected`; `meaning` spells the expected shape symbolically, e.g. '(M,)'."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{fn}: '{name}' has shape {tuple(a.shape)}, expected {meaning} = {tuple(expected)}")


def vector(fn, name, a, size, meaning, like):
    """An optional 1-D parameter (bias, gamma, ...) of `size`, returned contiguous, or None."""
    if a is None:
        return None
    xp = float_array(fn, name, a, like=like)
    shape(fn, name, a, (size,), meaning)
    return xp.ascontiguousarray(a)


def c_contiguous(fn, name, a):
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: '{name}' must be C-contiguous (it is written in place), "
                         f"got strides {a.strides} for shape {tuple(a.shape)}")


def output(fn, out, expected, like, inputs=()):
    """`out` checked (or allocated when None): shape, dtype and device of `like`, C-contiguous,
    writeable, not overlapping any of `inputs` (kernels read inputs after writing out)."""
    name0, a0 = like
    xp = xp_for(fn, name0, a0)
    if out is None:
        return xp.empty(tuple(expected), a0.dtype)
    float_array(fn, "out", out, like=like)
    shape(fn, "out", out, expected, "the result shape")
    c_contiguous(fn, "out", out)
    if not getattr(out.flags, "writeable", True):
        raise ValueError(f"{fn}: 'out' is read-only")
    for name, a in inputs:
        if a is not None and xp.may_share_memory(out, a):
            raise ValueError(f"{fn}: 'out' overlaps '{name}'; pass a separate buffer")
    return out


def choice(fn, name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{fn}: '{name}' must be one of {sorted(allowed)}, got {value!r}")
    return value


def rows(xp, a, last):
    """The (N, last) C-contiguous 2-D view of `a` (..., last); copies only a non-contiguous `a`."""
    return xp.ascontiguousarray(a).reshape(-1, last)


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
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: 'key_mask' must be bool, integer or float, got {mask.dtype}")
    shape(fn, "key_mask", mask, (batch, keys), "(B, Sk)")
    return mask


def scale(fn, value):
    if not np.isscalar(value) or not np.isreal(value):
        raise TypeError(f"{fn}: 'scale' must be a real number, got {value!r}")
    return float(value)
