"""Shape ops: views and copies that move elements without computing on them."""
import numpy as np

from ..autograd.function import Function
from .special import index_add


def _shape_arg(shape):
    """Accept ``reshape(2, 3)`` and ``reshape((2, 3))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


class Reshape(Function):
    """out = input viewed with a new shape (one -1 is inferred); d/dx = g reshaped back."""
    float_only = False

    @staticmethod
    def forward(ctx, input, shape):
        ctx.shape = input.shape
        try:
            return input.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view a tensor of shape {tuple(input.shape)} "
                             f"({input.size} elements) as {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    """out = input with its axes reordered; d/dx = g with the inverse order."""
    float_only = False

    @staticmethod
    def forward(ctx, input, dims):
        ndim = input.ndim
        if sorted(d % max(ndim, 1) for d in dims) != list(range(ndim)) or len(dims) != ndim:
            raise ValueError(f"permute: dims {tuple(dims)} is not a permutation of the {ndim} "
                             f"dimensions of a tensor of shape {tuple(input.shape)}")
        ctx.dims = tuple(d % ndim for d in dims)
        return input.transpose(ctx.dims)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(np.argsort(ctx.dims))


class Expand(Function):
    """out = input broadcast to ``shape`` (a view); the engine sums the gradient back."""
    float_only = False

    @staticmethod
    def forward(ctx, input, shape):
        shape = tuple(input.shape[i - (len(shape) - input.ndim)] if s == -1 else s
                      for i, s in enumerate(shape))
        try:
            return ctx.xp.broadcast_to(input, shape)
        except ValueError:
            raise ValueError(f"expand: cannot expand shape {tuple(input.shape)} to {shape}") from None

    @staticmethod
    def backward(ctx, g):
        return g


def _is_advanced(key):
    keys = key if isinstance(key, tuple) else (key,)
    return any(not isinstance(k, (slice, int, np.integer, type(None), type(Ellipsis))) for k in keys)


class Index(Function):
    """out = input[key] for basic slices and integer/bool arrays; the gradient is scattered
    back, adding where an index repeats."""
    float_only = False

    @staticmethod
    def forward(ctx, input, key):
        ctx.shape, ctx.dtype, ctx.key = input.shape, input.dtype, key
        try:
            return input[key]
        except IndexError as e:
            raise IndexError(f"index: {e} (tensor of shape {tuple(input.shape)})") from None

    @staticmethod
    def backward(ctx, g):
        grad = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_advanced(ctx.key):
            index_add(grad, ctx.key, g)
        else:
            grad[ctx.key] = g
        return grad


class Cat(Function):
    """out = the inputs joined along ``dim``; each input's gradient is its slice of g."""
    autocast = "promote"
    name = "cat"
    float_only = False

    @staticmethod
    def forward(ctx, *tensors, dim=0):
        ctx.dim = dim
        ctx.sizes = [t.shape[dim] for t in tensors]
        return ctx.xp.concatenate(tensors, axis=dim)

    @staticmethod
    def backward(ctx, g):
        bounds = np.cumsum(ctx.sizes)[:-1]
        return tuple(ctx.xp.split(g, bounds, axis=ctx.dim))


class IndexSelect(Function):
    """out = input[index] along dim 0 for an integer tensor ``index`` of any shape (embedding
    lookup); the gradient is scattered back with index_add. ``index`` is a tensor argument, so a
    traced graph sees it as an input rather than a constant."""
    float_only = False

    @staticmethod
    def forward(ctx, input, index):
        ctx.shape = input.shape
        ctx.save_for_backward(index)
        return input[index]

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        grad = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        index_add(grad, index, g)
        return grad, None
