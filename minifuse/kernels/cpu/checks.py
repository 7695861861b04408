"""Argument checks run in Python before any compiled kernel sees an array.

The kernels do no bounds checks (that is what lets them vectorize), so every shape, dtype,
contiguity and `out` problem must be caught here, with a message naming the function, the
argument, what was expected and what came.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(fn, name, a, ndim=None, min_ndim=None, dtype=None):
    """`a` is a float32/float64 ndarray (of `dtype`, when given, naming the dtype's source)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: '{name}' must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: '{name}' must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype[1]:
        raise TypeError(f"{fn}: '{name}' has dtype {a.dtype}, expected {dtype[1]} "
                        f"(the dtype of '{dtype[0]}'; all arrays must share one dtype)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: '{name}' must be {ndim}-D, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{fn}: '{name}' needs at least {min_ndim} dims, got shape {a.shape}")
    return a


def shape(fn, name, a, expected, meaning):
    """`a.shape == expected`; `meaning` spells the expected shape symbolically, e.g. '(M,)'."""
    if a.shape != tuple(expected):
        raise ValueError(f"{fn}: '{name}' has shape {a.shape}, expected {meaning} = {tuple(expected)}")


def vector(fn, name, a, size, meaning, dtype):
    """An optional 1-D parameter (bias, gamma, ...) of `size`; returned C-contiguous (a cheap copy
    when it is a strided view), or None."""
    if a is None:
        return None
    float_array(fn, name, a, dtype=dtype)
    shape(fn, name, a, (size,), meaning)
    return np.ascontiguousarray(a)


def c_contiguous(fn, name, a):
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: '{name}' must be C-contiguous (it is written in place), "
                         f"got strides {a.strides} for shape {a.shape}")


def output(fn, out, expected, dtype, inputs=()):
    """`out` checked (or allocated when None): expected shape and dtype, C-contiguous, writeable,
    and not overlapping any array in `inputs` (the kernels read inputs after writing out)."""
    if out is None:
        return np.empty(expected, dtype[1])
    float_array(fn, "out", out, dtype=dtype)
    shape(fn, "out", out, expected, "the result shape")
    c_contiguous(fn, "out", out)
    if not out.flags.writeable:
        raise ValueError(f"{fn}: 'out' is read-only")
    for name, a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{fn}: 'out' overlaps '{name}'; pass a separate buffer")
    return out


def choice(fn, name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{fn}: '{name}' must be one of {sorted(allowed)}, got {value!r}")
    return allowed[value]


def rows(a, last):
    """The (N, last) C-contiguous 2-D view of `a` (..., last); copies only a non-contiguous `a`."""
    return np.ascontiguousarray(a).reshape(-1, last)
