"""Residual add + LayerNorm over the last dim, forward and backward:
out = (v - mean) / sqrt(var + eps) * gamma + beta, v = x + residual (+ bias, for the projection
bias that transformer_layer folds in here).

Unfused: `x + residual` is a temporary, mean reads it, `v - mean` is another, var reads that,
then normalise and scale/shift are two more passes with temporaries. Here each row is read from
memory once: the add writes v into a row buffer and sums it in the same loop; the variance
(two-pass about the mean, accurate in float32) and the final scale read that row from L1.
Training keeps xhat = (v - mean) * rstd and rstd per row, what the backward reads.
"""
import math

import numpy as np
from numba import prange

from .. import validate
from . import checks
from .elementwise import CHUNKS, chunk_rows, sum_chunks
from .jit import reduction

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["apply_residual_layer_norm", "residual_layer_norm", "residual_layer_norm_backward"]


@reduction
def _residual_layer_norm(x, residual, has_residual, bias, has_bias, gamma, beta, eps, out, xhat, rstd, keep,
                         pad, has_pad):
    n, d = x.shape
    for i in prange(n):
        if has_pad and pad[i] != 0:          # a padding row's output is zeros
            for j in range(d):
                out[i, j] = 0
            continue
        v = xhat[i] if keep else out[i]      # the row buffer: xhat is kept for backward
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
        r = 1.0 / math.sqrt(sq / d + eps)
        if keep:
            o = out[i]
            for j in range(d):
                h = (v[j] - mean) * r
                v[j] = h
                o[j] = h * gamma[j] + beta[j]
            rstd[i] = r
        else:
            for j in range(d):
                v[j] = (v[j] - mean) * r * gamma[j] + beta[j]


def apply_residual_layer_norm(x2, res2, bias, gamma, beta, eps, out2, xhat=None, rstd=None, pad_rows=None):
    """Checked-arguments entry: x2, res2, out2 (N, D) C-contiguous (res2 and bias may be None);
    gamma, beta (D,) contiguous; xhat (N, D) and rstd (N,) are written too when given (training).
    pad_rows (N,) or None (inference only): the rows' additive mask (`mask_add` flattened); the
    output rows where it is not 0 (padding) are zeros."""
    keep = xhat is not None
    _residual_layer_norm(x2, x2 if res2 is None else res2, res2 is not None,
                         gamma[:0] if bias is None else bias, bias is not None, gamma, beta, float(eps), out2,
                         xhat if keep else out2[:0], rstd if keep else gamma[:0], keep,
                         gamma[:0] if pad_rows is None else pad_rows, pad_rows is not None)
    return out2


def residual_layer_norm(x, residual, gamma, beta, eps, out=None):
    """LayerNorm(x + residual) over the last dim (biased variance); residual None = LayerNorm(x).

    x, residual (..., D), gamma, beta (D,) -> (..., D).
    """
    fn = "residual_layer_norm"
    gamma, beta, out = validate.residual_layer_norm(checks.CHECKS, fn, x, residual, gamma, beta, eps, out)
    d = x.shape[-1]
    res2 = None if residual is None else checks.rows(np, residual, d)
    apply_residual_layer_norm(checks.rows(np, x, d), res2, None, gamma, beta, eps, checks.flat_rows(out, d))
    return out


@reduction
def _residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma, dbeta, want_params):
    n, d = g.shape
    nc = min(n, CHUNKS)
    width = d if want_params else 0
    pgamma = np.zeros((nc, width), np.float64)
    pbeta = np.zeros((nc, width), np.float64)
    for c in prange(nc):
        lo, hi = chunk_rows(c, n, nc)
        for i in range(lo, hi):
            s1 = 0.0
            s2 = 0.0
            for j in range(d):
                gh = g[i, j] * gamma[j]
                s1 += gh
                s2 += gh * xhat[i, j]
                if want_params:
                    pgamma[c, j] += g[i, j] * xhat[i, j]
                    pbeta[c, j] += g[i, j]
            m1 = s1 / d
            m2 = s2 / d
            r = rstd[i]
            for j in range(d):
                dx[i, j] = r * (g[i, j] * gamma[j] - m1 - xhat[i, j] * m2)
    if want_params:
        sum_chunks(pgamma, dgamma)
        sum_chunks(pbeta, dbeta)


def residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma=None, dbeta=None):
    """With gh = g gamma, per row:  dx = rstd (gh - mean(gh) - xhat mean(gh xhat));
    dgamma = sum over rows of g xhat, dbeta = sum over rows of g (when both (D,) are given).
    The residual's gradient is dx itself (v = x + residual). g, xhat, dx (N, D) C-contiguous."""
    want = dgamma is not None
    _residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma if want else gamma[:0],
                                  dbeta if want else gamma[:0], want)
