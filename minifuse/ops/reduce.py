"""Reductions over ``dim`` (None, an int, or a tuple of ints), with ``keepdim``."""
from ..autograd.function import Function
from ._util import normalize_dims


def _expand_back(xp, g, shape, dims, keepdim):
    """Broadcast a reduced gradient back to the input's shape."""
    if not keepdim:
        g = xp.expand_dims(g, dims) if dims else g
    return xp.broadcast_to(g, shape)


class Sum(Function):
    """out = sum of input over dim; d/dx = 1 broadcast back"""
    autocast = "float32"
    float_only = False

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False):
        ctx.dims = normalize_dims("sum", dim, input.ndim)
        ctx.shape, ctx.keepdim = input.shape, keepdim
        return ctx.xp.asarray(input.sum(axis=ctx.dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return _expand_back(ctx.xp, g, ctx.shape, ctx.dims, ctx.keepdim)


class Mean(Function):
    """out = sum / n over dim; d/dx = 1/n broadcast back"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False):
        ctx.dims = normalize_dims("mean", dim, input.ndim)
        ctx.shape, ctx.keepdim = input.shape, keepdim
        ctx.n = 1
        for d in ctx.dims:
            ctx.n *= input.shape[d]
        return ctx.xp.asarray(input.mean(axis=ctx.dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return _expand_back(ctx.xp, g / ctx.n, ctx.shape, ctx.dims, ctx.keepdim)


class Var(Function):
    """out = sum((x - mean)^2) / (n - correction); d/dx = 2 (x - mean) / (n - correction).
    ``correction=1`` (the default, as in PyTorch) is the unbiased estimate."""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False, correction=1):
        dims = normalize_dims("var", dim, input.ndim)
        n = 1
        for d in dims:
            n *= input.shape[d]
        centered = input - input.mean(axis=dims, keepdims=True)
        ctx.save_for_backward(centered)
        # n <= correction: undefined, NaN as in PyTorch (not a ZeroDivisionError)
        ctx.dims, ctx.keepdim = dims, keepdim
        ctx.scale = 1.0 / (n - correction) if n > correction else float("nan")
        return ctx.xp.asarray((centered * centered).sum(axis=dims, keepdims=keepdim) * ctx.scale)

    @staticmethod
    def backward(ctx, g):
        (c,) = ctx.saved_tensors
        g = _expand_back(ctx.xp, g, c.shape, ctx.dims, ctx.keepdim)
        return g * c * (2 * ctx.scale)


class _Extreme(Function):
    """max/min values over dims; the gradient goes to the extreme elements, split evenly on ties."""

    reduce = None

    @classmethod
    def forward(cls, ctx, input, dim=None, keepdim=False):
        dims = normalize_dims(cls.op_name(), dim, input.ndim)
        if any(input.shape[d] == 0 for d in dims) or input.ndim == 0 and input.size == 0:
            raise RuntimeError(f"{cls.op_name()}: cannot reduce over an empty dimension (shape "
                               f"{tuple(input.shape)}, dim {dim})")
        out = getattr(input, cls.reduce)(axis=dims, keepdims=True)
        ctx.save_for_backward(input, out)
        ctx.dims, ctx.keepdim = dims, keepdim
        return ctx.xp.asarray(out if keepdim else out.squeeze(dims) if dims else out)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        hit = (x == out)
        hit = hit / hit.sum(axis=ctx.dims, keepdims=True)
        return _expand_back(ctx.xp, g, x.shape, ctx.dims, ctx.keepdim) * hit.astype(g.dtype)


class Amax(_Extreme):
    reduce = "max"


class Amin(_Extreme):
    reduce = "min"
