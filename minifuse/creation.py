"""Factory functions: tensors from data, constants and random numbers."""
import numpy as np

from . import dtypes
from .device import Device, to_device
from .random import generator
from .tensor import Tensor

__all__ = ["tensor", "from_numpy", "zeros", "ones", "empty", "full", "arange", "randn", "rand",
           "zeros_like", "ones_like", "empty_like", "full_like", "randn_like", "eye",
           "linspace", "randint"]


def _finish(array, dtype, device, requires_grad):
    dtype = dtypes.as_dtype(dtype)
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None:
        array = to_device(array, Device(device))
    return Tensor(array, requires_grad=requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (a list, a scalar, an array or a tensor).
    Python floats become float32 (the default dtype), Python ints int64."""
    if isinstance(data, Tensor):
        data = data.data
    arr = Tensor(data, dtype=dtype).data  # dtype now: Python floats must not pass through float32
    arr = arr.copy() if arr is data or getattr(arr, "base", None) is not None else arr
    return _finish(arr, dtype, device, requires_grad)


def from_numpy(array):
    """A tensor sharing memory with ``array`` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _dtype_or_default(dtype):
    """The given dtype, or the default float dtype."""
    return dtypes.as_dtype(dtype) or dtypes.get_default_dtype()


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _finish(np.zeros(_shape(size), _dtype_or_default(dtype)), None, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _finish(np.ones(_shape(size), _dtype_or_default(dtype)), None, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _finish(np.empty(_shape(size), _dtype_or_default(dtype)), None, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    return _finish(np.full(tuple(size), fill_value, _dtype_or_default(dtype)), None, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _finish(np.eye(n, m, dtype=_dtype_or_default(dtype)), None, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Like PyTorch: int64 when every bound is an int, else the default float dtype."""
    if end is None:
        start, end = 0, start
    ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    dtype = dtypes.as_dtype(dtype) or (dtypes.int64 if ints else dtypes.get_default_dtype())
    return _finish(np.arange(start, end, step, dtype=dtype), None, device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end``, both included (default float dtype)."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative int, got {steps!r}")
    arr = np.linspace(start, end, int(steps), dtype=np.float64).astype(_dtype_or_default(dtype))
    return _finish(arr, None, device, requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, requires_grad=False):
    """Integers drawn uniformly from [low, high) by the global generator, int64 by default.
    As in PyTorch, ``randint(high, size)`` draws from [0, high)."""
    if size is None and isinstance(high, (tuple, list)):      # randint(high, size)
        low, high, size = 0, low, high
    elif high is None:                                        # randint(high, size=size)
        low, high = 0, low
    if size is None or isinstance(size, (int, np.integer)):
        raise TypeError(f"randint: 'size' must be a tuple of ints, got {size!r}")
    if not low < high:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    arr = generator().integers(low, high, size=tuple(size)).astype(dtypes.as_dtype(dtype) or dtypes.int64)
    return _finish(arr, None, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the global generator (see ``mf.manual_seed``)."""
    dtype = _dtype_or_default(dtype)
    arr = generator().standard_normal(_shape(size), dtype=np.float64).astype(dtype)
    return _finish(arr, None, device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from the global generator."""
    arr = generator().random(_shape(size), dtype=np.float64).astype(_dtype_or_default(dtype))
    return _finish(arr, None, device, requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)
