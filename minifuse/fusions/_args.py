"""Argument checks and saved-array helpers shared by the fused functions.

Every check runs at the Python boundary, before any kernel: a kernel does no bounds checks, so
a wrong shape, dtype or device must fail here, naming the function and the argument.
"""
import numpy as np

from ..kernels.cpu import checks
from ..tensor import Tensor


def tensor(fn, name, t, like=None, min_ndim=None):
    """``t`` is a float32/float64 CPU Tensor (of ``like``'s dtype, ``like`` = (name, Tensor))."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: '{name}' must be a Tensor, got {type(t).__name__}")
    if not isinstance(t.data, np.ndarray):
        raise NotImplementedError(f"{fn}: '{name}' is on {t.device}; the fused functions run on the CPU only")
    checks.float_array(fn, name, t.data, min_ndim=min_ndim,
                       dtype=None if like is None else (like[0], like[1].dtype))
    return t


def vector(fn, name, t, size, meaning, like):
    """An optional 1-D Tensor (bias, gamma, beta) of ``size`` elements."""
    if t is not None:
        tensor(fn, name, t, like)
        checks.shape(fn, name, t.data, (size,), meaning)
    return t


def store_dtype(fn, value, dtype):
    """``input_store_dtype``: None (keep ``dtype``) or a floating dtype no wider than ``dtype``."""
    if value is None:
        return None
    try:
        d = np.dtype(value)
    except TypeError:
        raise TypeError(f"{fn}: 'input_store_dtype' must be a dtype such as float16, got {value!r}") from None
    if d.kind != "f" or d.itemsize > dtype.itemsize:
        raise ValueError(f"{fn}: 'input_store_dtype' must be a floating dtype no wider than the input's "
                         f"{dtype}, got {d}")
    return None if d == dtype else d


def choice(fn, name, value, allowed):
    return checks.choice(fn, name, value, allowed)


# ---- inside forward / backward (raw arrays) ---------------------------------------------------

rows = checks.rows


def contiguous(a):
    return None if a is None else np.ascontiguousarray(a)


def or_empty(a, dtype):
    """A kernel argument that is absent: an empty array of the right dtype (flag says unused)."""
    return np.empty(0, dtype) if a is None else a


def store(a, dtype):
    """The array kept for backward: ``a`` itself, or a lower-precision copy (input_store_dtype)."""
    return a if a is None or dtype is None else a.astype(dtype)


def restore(a, dtype):
    return a if a is None or a.dtype == dtype else a.astype(dtype)
