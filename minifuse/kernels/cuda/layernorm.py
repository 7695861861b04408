"""Residual add + LayerNorm on CUDA, forward and backward: out = LN(x + residual (+ bias)) gamma
+ beta over the last dim (biased variance), the row in registers (`blocks.py`; the forward
moves it in 8-byte words, `words.py`), two-pass variance.

Training keeps xhat = (v - mean) rstd and rstd per row. The backward is a block per group of rows,
as in the forward; the gamma/beta gradients are float64 register sums per column, stored once per
block as partial sums and added over the blocks by the array module in a fixed order.
"""
import functools
import math

import numpy as np

from .. import validate
from . import words
from .blocks import MAX_THREADS, PER, block_sum, row_layout, rows_per_block, threads_for
from .checks import CHECKS, flat_rows, rows
from .elementwise import _sum_parts
from .mathfn import compute_dtype
from .runtime import blocks, cuda, launch, xp_for
from .storage import access

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["apply_residual_layer_norm", "residual_layer_norm", "residual_layer_norm_backward"]

# Blocks of the LayerNorm backward, each over rows b, b + LN_PARTS, ...
LN_PARTS = 512


@functools.lru_cache(maxsize=None)
def _layer_norm_kernel(dtype, stats, fmt, per):
    """For x, res, bias, gamma, beta, out and xhat of `dtype` (in format `fmt`), rstd of `stats`."""
    ct = compute_dtype(dtype)
    ctype = ct.type
    zero = ctype(0)
    n = words.values_per_word(fmt)
    held = per * n                  # values per thread (a compile-time size)
    word2, word1, value, put2 = words.functions(fmt, dtype)
    store_stat = access(stats)[1]

    @cuda.jit
    def residual_layer_norm(x, res, has_res, bias, has_bias, gamma, beta, eps, out, xhat, rstd, keep,
                            pad, has_pad):
        """out = LN(x + res + bias) gamma + beta; with keep (training) also xhat = (v - mean) rstd
        and rstd per row, what the fused backward reads; with has_pad the rows where pad is not
        0 are zeros. Row blockIdx.x * blockDim.y + threadIdx.y; thread t holds the words t,
        t + T, ... of its row (`words.py`)."""
        row = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        d = x.shape[1]
        nw = d // n
        live = row < x.shape[0]            # a row past the end still joins every block reduction
        padded = live and has_pad and pad[row] != 0     # zeros out; read nothing
        buf = cuda.shared.array(MAX_THREADS, ctype)
        vals = cuda.local.array(held, ctype)
        s = zero
        for i in range(per):
            wi = tid + i * nt
            for k in range(n):
                vals[i * n + k] = zero
            if wi < nw and live and not padded:
                wx = word2(x, row, wi)
                wr = word2(res, row, wi) if has_res else wx
                wb = word1(bias, wi) if has_bias else wx
                for k in range(n):
                    t = value(wx, k)
                    if has_res:
                        t += value(wr, k)
                    if has_bias:
                        t += value(wb, k)
                    vals[i * n + k] = t
                    s += t
        mean = block_sum(buf, s) / ctype(d)
        sq = zero
        for i in range(per):
            if tid + i * nt < nw and live and not padded:
                for k in range(n):
                    c = vals[i * n + k] - mean
                    sq += c * c
        var = block_sum(buf, sq) / ctype(d)
        if not live:
            return
        if padded:
            for i in range(per):
                wi = tid + i * nt
                if wi < nw:
                    put2(out, row, wi, vals, i * n)        # vals are zeros
            return
        r = ctype(1) / math.sqrt(var + eps)
        for i in range(per):
            wi = tid + i * nt
            if wi < nw:
                wg = word1(gamma, wi)
                wbeta = word1(beta, wi)
                for k in range(n):
                    vals[i * n + k] = (vals[i * n + k] - mean) * r
                if keep:
                    put2(xhat, row, wi, vals, i * n)
                for k in range(n):
                    vals[i * n + k] = vals[i * n + k] * value(wg, k) + value(wbeta, k)
                put2(out, row, wi, vals, i * n)
        if keep and tid == 0:
            rstd[row] = store_stat(r)
    return residual_layer_norm


def apply_residual_layer_norm(x2, res2, bias, gamma, beta, eps, out2, xhat=None, rstd=None, pad_rows=None):
    """Checked-arguments entry: x2, res2, out2 (N, D) C-contiguous (res2 and bias may be None);
    xhat (N, D) and rstd (N,) are written too when given (training keeps them for backward).
    pad_rows (N,) or None (inference only): the rows' additive mask (`mask_add` flattened); the
    output rows where it is not 0 (padding) are zeros."""
    n, d = x2.shape
    if n == 0:
        return out2
    ct = compute_dtype(x2.dtype)
    keep = xhat is not None
    rstd = rstd if keep else out2[0, :0]
    fmt = words.format_for(d, x2, res2, bias, gamma, beta, out2, xhat)
    t, per = row_layout(words.words(d, fmt))
    g = rows_per_block(t)
    launch(_layer_norm_kernel(x2.dtype, rstd.dtype, fmt, per), blocks(n, g), (t, g),
           x2, x2 if res2 is None else res2, res2 is not None,
           gamma if bias is None else bias, bias is not None, gamma, beta, ct.type(eps), out2,
           xhat if keep else out2[:0], rstd, keep,
           gamma[:0] if pad_rows is None else pad_rows, pad_rows is not None)
    return out2


def residual_layer_norm(x, residual, gamma, beta, eps, out=None):
    """LayerNorm(x + residual) over the last dim (biased variance); residual None = LayerNorm(x).

    x, residual (..., D), gamma, beta (D,) -> (..., D).
    """
    fn = "residual_layer_norm"
    gamma, beta, out = validate.residual_layer_norm(CHECKS, fn, x, residual, gamma, beta, eps, out)
    xp = xp_for(fn, "x", x)
    d = x.shape[-1]
    res2 = None if residual is None else rows(xp, residual, d)
    apply_residual_layer_norm(rows(xp, x, d), res2, None, gamma, beta, eps, flat_rows(out, d))
    return out


@functools.lru_cache(maxsize=None)
def _layer_norm_backward_kernel(dtype, stats):
    """For g, xhat, gamma and dx of `dtype`, rstd of `stats`."""
    ctype = compute_dtype(dtype).type
    zero = ctype(0)
    load, store = access(dtype)
    load_stat = access(stats)[0]

    @cuda.jit
    def layer_norm_backward(g, xhat, rstd, gamma, dx, pgamma, pbeta, want_params):
        n, d = g.shape
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        buf = cuda.shared.array(MAX_THREADS, ctype)
        gh = cuda.local.array(PER, ctype)
        xh = cuda.local.array(PER, ctype)
        sg = cuda.local.array(PER, np.float64)     # this block's share of dgamma, dbeta
        sb = cuda.local.array(PER, np.float64)
        for i in range(PER):
            sg[i] = 0
            sb[i] = 0
        row = cuda.blockIdx.x
        while row < n:
            s1 = zero
            s2 = zero
            for i in range(PER):
                j = tid + i * nt
                gh[i] = zero
                xh[i] = zero
                if j < d:
                    gj = load(g[row, j])
                    xh[i] = load(xhat[row, j])
                    gh[i] = gj * load(gamma[j])
                    s1 += gh[i]
                    s2 += gh[i] * xh[i]
                    sg[i] += np.float64(gj * xh[i])
                    sb[i] += np.float64(gj)
            m1 = block_sum(buf, s1) / ctype(d)
            m2 = block_sum(buf, s2) / ctype(d)
            r = load_stat(rstd[row])
            for i in range(PER):
                j = tid + i * nt
                if j < d:
                    dx[row, j] = store(r * (gh[i] - m1 - xh[i] * m2))
            row += cuda.gridDim.x
        if want_params:
            for i in range(PER):
                j = tid + i * nt
                if j < d:
                    pgamma[cuda.blockIdx.x, j] = sg[i]
                    pbeta[cuda.blockIdx.x, j] = sb[i]
    return layer_norm_backward


def residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma=None, dbeta=None):
    """With gh = g gamma, per row:  dx = rstd (gh - mean(gh) - xhat mean(gh xhat));
    dgamma = sum over rows of g xhat, dbeta = sum over rows of g (when both (D,) are given).
    The residual's gradient is dx itself (v = x + residual). g, xhat, dx (N, D) C-contiguous."""
    n, d = g.shape
    want_params = dgamma is not None
    if n == 0:
        if want_params:
            dgamma[...] = 0
            dbeta[...] = 0
        return
    xp = xp_for("residual_layer_norm_backward", "g", g)
    parts = min(n, LN_PARTS)
    shape = (parts, d) if want_params else (1, 1)                               # (1, 1): unused
    pgamma, pbeta = xp.empty(shape, np.float64), xp.empty(shape, np.float64)
    launch(_layer_norm_backward_kernel(g.dtype, rstd.dtype), parts, threads_for(d),
           g, xhat, rstd, gamma, dx, pgamma, pbeta, want_params)
    if want_params:
        _sum_parts(xp, pgamma, 0, dgamma)
        _sum_parts(xp, pbeta, 0, dbeta)
