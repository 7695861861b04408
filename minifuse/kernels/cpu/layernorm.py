"""Residual add + LayerNorm over the last dim: out = (v - mean) / sqrt(var + eps) * gamma + beta,
v = x + residual (+ bias, for the projection bias that transformer_layer folds in here).

Unfused: `x + residual` is a temporary, mean reads it, `v - mean` is another, var reads that,
then normalise and scale/shift are two more passes with temporaries. Here each row is read from
memory once: the add writes v into the out row and sums it in the same loop; the variance
(two-pass about the mean, accurate in float32) and the final scale read that row from L1.
"""
import math

from numba import prange

from .. import validate
from . import checks
from .jit import reduction


@reduction
def _residual_layer_norm(x, residual, has_residual, bias, has_bias, gamma, beta, eps, out):
    n, d = x.shape
    for i in prange(n):
        v = out[i]
        total = 0.0                          # float64 sums: exact enough for any row length
        for j in range(d):
            t = x[i, j]
            if has_residual:
                t += residual[i, j]
            if has_bias:
                t += bias[j]
            v[j] = t
            total += t
        mean = total / d
        sq = 0.0
        for j in range(d):
            c = v[j] - mean
            sq += c * c
        rstd = 1.0 / math.sqrt(sq / d + eps)
        for j in range(d):
            v[j] = (v[j] - mean) * rstd * gamma[j] + beta[j]


def apply_residual_layer_norm(x2, residual2, bias, gamma, beta, eps, out2):
    """Checked-arguments entry: 2-D C-contiguous x2/residual2/out2 (N, D); residual2 and bias may
    be None; gamma, beta (D,) contiguous."""
    _residual_layer_norm(x2, x2 if residual2 is None else residual2, residual2 is not None,
                         gamma[:0] if bias is None else bias, bias is not None,
                         gamma, beta, float(eps), out2)


def residual_layer_norm(x, residual, gamma, beta, eps, out=None):
    """LayerNorm(x + residual) over the last dim (biased variance); residual None = LayerNorm(x).

    x, residual (..., D), gamma, beta (D,) -> (..., D).
    """
    fn = "residual_layer_norm"
    gamma, beta = validate.residual_layer_norm(checks.CHECKS, fn, x, residual, gamma, beta, eps)
    out = checks.output(fn, out, x.shape, ("x", x), [("x", x), ("residual", residual)])
    d = x.shape[-1]
    res2 = None if residual is None else checks.rows(residual, d)
    apply_residual_layer_norm(checks.rows(x, d), res2, None, gamma, beta, eps, out.reshape(-1, d))
    return out
