"""Fused training kernels: the forward and the backward of bias + activation, (weighted) GLU /
SwiGLU and residual + LayerNorm, each one parallel sweep over the rows.

The unfused taped path computes a backward as a chain of NumPy passes (``g * s * (1 + x * (1 -
s))`` is five full-size temporaries) and then a separate ``sum`` for the bias gradient. Here each
backward reads its inputs once, writes the input gradient once and accumulates the reductions
(bias, gamma/beta, per-token weight gradients) in the same sweep:

- Parameter gradients (sums over all rows) use a fixed number of row chunks, ``CHUNKS``: each
  chunk adds its rows into its own float64 row of partial sums, then one short loop adds the
  chunks up. Float64 partials keep the sum as accurate as NumPy's pairwise sum; a fixed chunk
  count keeps the result independent of the thread count.
- Arguments are checked by the Python callers (``minifuse.fusions``) before any kernel runs.
- Literals go through ``mathfn.lit`` so float32 kernels stay float32.
"""
import math

import numpy as np
from numba import prange

from ...ops.elementwise import GELU_TANH_C, SQRT_2_OVER_PI
from . import mathfn
from .epilogue import activate, by_code, by_flag
from .jit import inline, kernel, reduction
from .rows import row_sum

# Row chunks of a parameter-gradient reduction: enough for load balance on a few cores, few
# enough that the (CHUNKS, M) float64 partial sums stay small.
CHUNKS = 16

INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@inline
def derivative(x, code):
    """act'(x) for an activation code of ``epilogue.ACTIVATIONS``.

    gelu (exact):  Phi(x) + x phi(x)
    gelu_tanh:     gelu_tanh(x) = x s with s = sigmoid(2u), u = c0 (x + c1 x^3), so
                   d/dx = s + 2 x s (1 - s) c0 (1 + 3 c1 x^2); this equals Megatron's
                   0.5 (1 + t) + 0.5 x (1 - t^2) u' with t = tanh(u) = 2s - 1, without the
                   cancellation of 1 + t for negative u.
    """
    one = mathfn.lit(x, 1.0)
    if code == 1:                                          # relu (0 for NaN, like the taped op)
        return one if x > 0 else mathfn.lit(x, 0.0)
    if code == 2:
        cdf = mathfn.lit(x, 0.5) * (one + mathfn.erf_(x * mathfn.lit(x, INV_SQRT_2)))
        pdf = mathfn.exp_(mathfn.lit(x, -0.5) * x * x) * mathfn.lit(x, INV_SQRT_2PI)
        return cdf + x * pdf
    if code == 3:
        c0, c1 = mathfn.lit(x, SQRT_2_OVER_PI), mathfn.lit(x, GELU_TANH_C)
        s = mathfn.sigmoid(mathfn.lit(x, 2.0) * c0 * (x + c1 * x * x * x))
        return s + mathfn.lit(x, 2.0) * x * s * (one - s) * c0 * (one + mathfn.lit(x, 3.0) * c1 * x * x)
    if code == 4:                                          # silu: s (1 + x (1 - s))
        s = mathfn.sigmoid(x)
        return s * (one + x * (one - s))
    if code == 5:                                          # sigmoid: s (1 - s)
        s = mathfn.sigmoid(x)
        return s * (one - s)
    if code == 6:                                          # tanh: 1 - t^2
        t = mathfn.tanh_(x)
        return one - t * t
    return one


@inline
def chunk_rows(c, n, nc):
    return c * n // nc, (c + 1) * n // nc


@inline
def sum_chunks(partial, out):
    """out[j] = sum over chunks of partial[c, j] (float64), stored in out's dtype."""
    for j in range(out.shape[0]):
        s = 0.0
        for c in range(partial.shape[0]):
            s += partial[c, j]
        out[j] = s


# ---- bias + activation ----------------------------------------------------------------------
#
# Each kernel hands its row loop to `epilogue.by_code`, which calls it with the activation code as
# a constant: every arm then compiles to its own branch-free loop that LLVM vectorizes. With the
# code (or a has_bias / want_dbias flag) tested inside the loop, the loop stayed scalar, 6-9x
# slower (GELU backward 1024x3072 float32: 12.8 ms -> 2.1 ms). A missing bias is a zero vector.

@inline
def _bias_act_forward_rows(code, args):
    y, bias, out, i = args
    yi, oi = y[i], out[i]
    for j in range(yi.shape[0]):
        oi[j] = activate(yi[j] + bias[j], code)


@kernel
def bias_act_forward(y, bias, has_bias, code, out):
    """out = act(y + bias); y, out (N, M), bias (M,)."""
    n, m = y.shape
    b = bias if has_bias else np.zeros(m, y.dtype)
    for i in prange(n):
        by_code(code, _bias_act_forward_rows, (y, b, out, i))


@inline
def _bias_act_backward_rows(code, args):
    g, y, bias, dy, part, lo, hi = args
    for i in range(lo, hi):
        gi, yi, di = g[i], y[i], dy[i]
        for j in range(gi.shape[0]):
            d = gi[j] * derivative(yi[j] + bias[j], code)
            di[j] = d
            part[j] += d


@kernel
def bias_act_backward(g, y, bias, has_bias, code, dy, dbias, want_dbias):
    """dy = g * act'(y + bias); dbias = sum over rows of dy (when want_dbias). All (N, M)."""
    n, m = g.shape
    nc = min(n, CHUNKS)
    b = bias if has_bias else np.zeros(m, y.dtype)
    partial = np.zeros((nc, m), np.float64)     # summed always: a float64 row in cache is cheap
    for c in prange(nc):
        lo, hi = chunk_rows(c, n, nc)
        by_code(code, _bias_act_backward_rows, (g, y, b, dy, partial[c], lo, hi))
    if want_dbias:
        sum_chunks(partial, dbias)


# ---- gated linear units: out = gate(a) * b, [a | b] = y + bias -------------------------------

@inline
def gate_and_slope(a, silu):
    """(gate(a), gate'(a)) for the SiLU gate (SwiGLU) or the sigmoid gate (GLU)."""
    one = mathfn.lit(a, 1.0)
    s = mathfn.sigmoid(a)
    if silu:
        return a * s, s * (one + a * (one - s))
    return s, s * (one - s)


@inline
def _glu_forward_rows(silu, args):
    y, w, out, i = args
    yi, oi, wi = y[i], out[i], w[i]
    h = oi.shape[0]
    for j in range(h):
        oi[j] = gate_and_slope(yi[j], silu)[0] * yi[h + j] * wi


@kernel
def weighted_glu_forward(y, silu, w, out):
    """out[i, j] = gate(y[i, j]) * y[i, H + j] * w[i]; y (N, 2H), w (N,), out (N, H)."""
    for i in prange(out.shape[0]):
        by_flag(silu, _glu_forward_rows, (y, w, out, i))


@inline
def _glu_backward_rows(mode, args):
    # mode = silu + 2 * has_w, a constant here. The weight gradient dw[i] = sum_j gate b g is
    # a sum: summed in this loop it would be a sequential chain (no reassociation here, it
    # would break `exp`'s range reduction) and the loop would not vectorize (5x slower); the
    # terms go to a scratch row instead, summed by `row_sum`, which may reassociate.
    silu, has_w = mode % 2 == 1, mode >= 2
    g, y, bias, w, dy, dw, part, lo, hi = args
    h = g.shape[1]
    terms = np.empty(h if has_w else 0, np.float64)
    for i in range(lo, hi):
        gi, yi, di, wi = g[i], y[i], dy[i], w[i]
        for j in range(h):
            a = yi[j] + bias[j]
            b = yi[h + j] + bias[h + j]
            gate, slope = gate_and_slope(a, silu)
            if has_w:
                terms[j] = gate * b * gi[j]
            gw = gi[j] * wi
            da = gw * slope * b
            db = gw * gate
            di[j] = da
            di[h + j] = db
            part[j] += da
            part[h + j] += db
        if has_w:
            dw[i] = row_sum(terms)


@kernel
def glu_backward(g, y, bias, has_bias, silu, w, has_w, dy, dbias, want_dbias, dw):
    """Backward of out = gate(a) * b (* w per row), [a | b] = y + bias:

        da = g w gate'(a) b,   db = g w gate(a),   dw[i] = sum_j gate(a) b g,
        dbias = sum over rows of [da | db].
    g (N, H), y and dy (N, 2H), bias (2H,), w and dw (N,); w holds ones unless has_w.
    dw is written only when has_w (the caller may pass a scratch array otherwise).
    """
    n, h = g.shape
    nc = min(n, CHUNKS)
    b = bias if has_bias else np.zeros(2 * h, y.dtype)
    partial = np.zeros((nc, 2 * h), np.float64)
    mode = (1 if silu else 0) + (2 if has_w else 0)
    for c in prange(nc):
        lo, hi = chunk_rows(c, n, nc)
        by_code(mode, _glu_backward_rows, (g, y, b, w, dy, dw, partial[c], lo, hi))
    if want_dbias:
        sum_chunks(partial, dbias)


# ---- residual + LayerNorm ------------------------------------------------------------------

@reduction
def residual_layer_norm_forward(x, residual, has_residual, gamma, beta, eps, out, xhat, rstd):
    """v = x + residual; xhat = (v - mean) * rstd, rstd = 1 / sqrt(var + eps); out = xhat gamma + beta.

    Writes out, xhat (kept for backward) and rstd (N,); sums in float64, two-pass variance.
    """
    n, d = x.shape
    for i in prange(n):
        xh = xhat[i]
        total = 0.0
        for j in range(d):
            t = x[i, j] + residual[i, j] if has_residual else x[i, j]
            xh[j] = t
            total += t
        mean = total / d
        sq = 0.0
        for j in range(d):
            c = xh[j] - mean
            sq += c * c
        r = 1.0 / math.sqrt(sq / d + eps)
        for j in range(d):
            v = (xh[j] - mean) * r
            xh[j] = v
            out[i, j] = v * gamma[j] + beta[j]
        rstd[i] = r


@reduction
def residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma, dbeta, want_params):
    """With gh = g gamma, per row:  dx = rstd (gh - mean(gh) - xhat mean(gh xhat));
    dgamma = sum over rows of g xhat, dbeta = sum over rows of g (when want_params).
    The residual's gradient is dx itself (v = x + residual)."""
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
