"""Small helpers shared by the op modules."""
import numpy as np

from ..dtypes import get_default_dtype, is_floating


def as_operand(value, like):
    """A Python/NumPy scalar or array operand as an array with ``like``'s dtype and device.

    Scalars take the tensor's dtype (``x_float32 * 2.0`` stays float32, as in PyTorch); a float
    scalar with an integer tensor gives the default float dtype.
    """
    from ..tensor import Tensor
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype
    if isinstance(value, float) and not is_floating(dtype):
        dtype = get_default_dtype()
    return like.xp.asarray(value, dtype=dtype)


def check_broadcast(op, a_shape, b_shape, names=("input", "other")):
    """The broadcast shape of two operands, or a ValueError naming the op and both shapes."""
    try:
        return np.broadcast_shapes(tuple(a_shape), tuple(b_shape))
    except ValueError:
        raise ValueError(f"{op}: shapes of '{names[0]}' {tuple(a_shape)} and '{names[1]}' "
                         f"{tuple(b_shape)} cannot be broadcast together") from None


def shape_of(x):
    return tuple(getattr(x, "shape", ()))


def normalize_dims(op, dim, ndim):
    """``dim`` (None, int or tuple, negatives allowed) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim!r} names a dimension twice")
    return tuple(sorted(out))
