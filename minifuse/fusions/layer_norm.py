"""Residual add + LayerNorm for training, forward and backward fused.

    v = x + residual,  xhat = (v - mean(v)) * rstd,  rstd = 1 / sqrt(var(v) + eps),
    out = xhat * gamma + beta      (over the last dim, biased variance)

Saved: xhat (N x D) and rstd (N); not x, not residual, not v, not mean. Backward needs exactly
those: with gh = g * gamma,
    dv = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)),  dx = dresidual = dv,
    dgamma = sum(g * xhat), dbeta = sum(g)   (over all leading dims),
all in one kernel (row sums per row, parameter sums per row chunk).
"""
from ..autograd.function import Function
from ..kernels import checks
from . import _args as A

__all__ = ["residual_layer_norm", "ResidualLayerNorm"]


class ResidualLayerNorm(Function):
    """LayerNorm(x + residual) * gamma + beta; one node, gradients for all four inputs."""

    autocast = "float32"      # under mf.autocast: a reduction, in float32 (as the taped LayerNorm)
    new_gradients = True      # (dx is returned for x and residual alike: the engine copies those)

    @staticmethod
    def forward(ctx, x, residual, gamma, beta, eps, store_dtype=None):
        K = A.kernels(x)
        xp = K.xp
        d = x.shape[-1]
        x2 = A.rows(xp, x, d)
        n = x2.shape[0]
        r2 = None if residual is None else A.rows(xp, residual, d)
        out = xp.empty((n, d), x.dtype)
        xhat = xp.empty((n, d), x.dtype)
        rstd = xp.empty(n, A.stats_dtype(x.dtype))
        gamma = A.optional(xp, gamma)
        K.apply_residual_layer_norm(x2, r2, None, gamma, A.optional(xp, beta), float(eps), out, xhat, rstd)
        ctx.save_for_backward(A.store(xhat, store_dtype), rstd, gamma)
        ctx.meta = (K, x.shape, x.dtype)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, gamma = ctx.saved_tensors
        K, shape, dtype = ctx.meta
        xp = K.xp
        d = shape[-1]
        want_params = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        dx = xp.empty(xhat.shape, dtype)
        dgamma = xp.empty(d, dtype) if want_params else None
        dbeta = xp.empty(d, dtype) if want_params else None
        K.residual_layer_norm_backward(A.rows(xp, g, d), A.restore(xhat, dtype), rstd, gamma, dx, dgamma, dbeta)
        dx = dx.reshape(shape)
        return dx, dx, dgamma, dbeta


def residual_layer_norm(x, residual, gamma, beta, eps=1e-5, input_store_dtype=None):
    """LayerNorm(x + residual) over the last dim; residual None gives LayerNorm(x).

    x, residual (..., D), gamma, beta (D,) -> (..., D). input_store_dtype (e.g. float16) is
    the dtype the saved normalised input xhat is kept in.
    """
    fn = "residual_layer_norm"
    x, residual, gamma, beta = A.autocast(fn, ResidualLayerNorm, x, residual, gamma, beta)
    A.tensor(fn, "x", x, min_ndim=1)
    if residual is not None:
        A.tensor(fn, "residual", residual, ("x", x))
        if residual.shape != x.shape:
            raise ValueError(f"{fn}: 'residual' has shape {residual.shape}, expected the shape of 'x' {x.shape}")
    d = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is None:
            raise TypeError(f"{fn}: '{name}' must be a Tensor of shape (D,) = ({d},), got None")
        A.vector(fn, name, p, d, "(D,) with D = x.shape[-1]", ("x", x))
    eps = checks.eps(fn, eps)
    A.kernels(x.data).CHECKS.row_length(fn, d)
    return ResidualLayerNorm.apply(x, residual, gamma, beta, float(eps),
                                   A.store_dtype(fn, input_store_dtype, x.dtype))
