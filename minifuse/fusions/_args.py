"""Argument checks and saved-array helpers shared by the fused functions.

Every check runs at the Python boundary, before any kernel: a kernel does no bounds checks, so
a wrong shape, dtype or device must fail here, naming the function and the argument. Tensors may
be on the CPU or on CUDA, all on one device; the forward and backward code below takes the
array module ``xp`` (numpy or cupy) for what it allocates.
"""
import numpy as np

from ..autograd.function import mixed_devices
from ..kernels.cpu import checks
from ..tensor import Tensor


def tensor(fn, name, t, like=None, min_ndim=None):
    """``t`` is a float32/float64 Tensor (of ``like``'s dtype and device, ``like`` = (name, Tensor))."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: '{name}' must be a Tensor, got {type(t).__name__}")
    if like is not None and t.device != like[1].device:
        raise mixed_devices(fn, like[0], like[1].device, name, t.device)
    checks.float_array(fn, name, _host_like(t.data), min_ndim=min_ndim,
                       dtype=None if like is None else (like[0], like[1].dtype))
    return t


def _host_like(a):
    """``a`` (NumPy), or for a CuPy array a NumPy stand-in of its shape and dtype that holds no
    memory, for the dtype and shape checks (which are the CPU kernels', one wording)."""
    if isinstance(a, np.ndarray):
        return a
    return np.lib.stride_tricks.as_strided(np.empty(1, a.dtype), a.shape, (0,) * a.ndim)


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


# ---- inside forward / backward (raw arrays of the array module xp) ---------------------------

def rows(xp, a, last):
    """The (N, last) C-contiguous 2-D view of ``a`` (..., last); copies only a non-contiguous ``a``."""
    return xp.ascontiguousarray(a).reshape(-1, last)


def contiguous(xp, a):
    return None if a is None else xp.ascontiguousarray(a)


def or_empty(xp, a, dtype):
    """A kernel argument that is absent: an empty array of the right dtype (flag says unused)."""
    return xp.empty(0, dtype) if a is None else a


def linear(xp, x2, w):
    """x2 (N, K) @ w.T (w (M, K)) into a new (N, M) array: BLAS or cuBLAS, the transpose a view."""
    return xp.matmul(x2, w.T, out=xp.empty((x2.shape[0], w.shape[0]), x2.dtype))


def store(a, dtype):
    """The array kept for backward: ``a`` itself, or a lower-precision copy (input_store_dtype)."""
    return a if a is None or dtype is None else a.astype(dtype)


def restore(a, dtype):
    return a if a is None or a.dtype == dtype else a.astype(dtype)
