"""Primitive ops of neural networks whose backward is much cheaper as one formula than as a
chain of elementwise ops: softmax, log-softmax, layer norm and binary cross-entropy."""
from ..autograd.function import Function
from ..kernels import activations as A


def _shifted(x, dim):
    """x - max(x) along dim: the same softmax, and exp never overflows."""
    return x - x.max(axis=dim, keepdims=True) if x.size else x


class Softmax(Function):
    """out = e^(x - max) / sum e^(x - max) along dim; d/dx = out * (g - sum(g * out))"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, dim=-1):
        e = ctx.xp.exp(_shifted(input, dim))
        out = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return out * (g - (g * out).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """out = x - max - log(sum e^(x - max)); d/dx = g - softmax * sum(g)"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, dim=-1):
        xp = ctx.xp
        z = _shifted(input, dim)
        out = z - xp.log(xp.exp(z).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g - ctx.xp.exp(out) * g.sum(axis=ctx.dim, keepdims=True)


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last ``ndim`` dims
    (biased variance, as PyTorch).

    With xhat = (x - mean) * rstd and gh = g * weight, over the N normalised elements:
      dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)),  dweight = sum(g * xhat),  dbias = sum(g)
    """
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, weight=None, bias=None, ndim=1, eps=1e-5):
        axes = tuple(range(input.ndim - ndim, input.ndim))
        mean = input.mean(axis=axes, keepdims=True)
        centered = input - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        rstd = 1 / ctx.xp.sqrt(var + eps)
        xhat = centered * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.axes = axes
        out = xhat
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        lead = tuple(range(g.ndim - len(axes)))
        gh = g * weight if weight is not None else g
        dx = rstd * (gh - gh.mean(axis=axes, keepdims=True)
                     - xhat * (gh * xhat).mean(axis=axes, keepdims=True))
        dw = (g * xhat).sum(axis=lead) if weight is not None and ctx.needs_input_grad[1] else None
        db = g.sum(axis=lead) if ctx.needs_input_grad[2] else None
        return dx, dw, db


class BinaryCrossEntropyWithLogits(Function):
    """Per element, with s(x) = log(1 + e^-x) = softplus(-x), L = 1 + (p - 1) y (p = pos_weight,
    1 without):  out = (1 - y) x + L s(x)   (= -p y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)))
      d/dx = (1 - y) - L sigmoid(-x),  d/dy = (p - 1) s(x) - x,  d/dp = y s(x)"""
    autocast = "float32"
    name = "binary_cross_entropy_with_logits"

    @staticmethod
    def forward(ctx, input, target, pos_weight=None):
        xp = ctx.xp
        softplus_neg = xp.log1p(xp.exp(-xp.abs(input))) + xp.maximum(-input, 0)   # never overflows
        scale = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
        ctx.save_for_backward(input, target, pos_weight, softplus_neg)
        return (1 - target) * input + scale * softplus_neg

    @staticmethod
    def backward(ctx, g):
        x, y, p, sp = ctx.saved_tensors
        scale = 1 if p is None else 1 + (p - 1) * y
        need_x, need_y, need_p = ctx.needs_input_grad
        gx = g * ((1 - y) - scale * A.sigmoid(ctx.xp, -x)) if need_x else None
        gy = g * ((0 if p is None else (p - 1) * sp) - x) if need_y else None
        gp = g * y * sp if need_p else None
        return gx, gy, gp
