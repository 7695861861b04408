"""Residual add + LayerNorm on CUDA, forward and backward: out = LN(x + residual (+ bias)) gamma
+ beta over the last dim (biased variance), the row in registers (`blocks.py`; the forward
moves it in 8-byte words, `words.py`), two-pass variance.

Training keeps xhat = (v - mean) rstd and rstd per row. The backward is two kernels: dx in the
forward's layout (a row's words in registers, rows grouped into blocks of at least 128 threads),
then the gamma/beta gradients as float64 column sums, each block summing a strip of columns over
one part of the rows (reading along rows: coalesced), its partial sums added over the parts by
one small kernel in a fixed order (deterministic). Why two: a single kernel would have to keep a
block's share of every column in registers across a loop over its rows, so few blocks, each
waiting on its row reductions one row after another.
"""
import functools
import math

import numpy as np

from .. import validate
from . import words
from .blocks import COLUMN_THREADS, MAX_THREADS, block_sum, row_layout, rows_per_block
from .checks import CHECKS, flat_rows, rows
from .elementwise import _sum_parts
from .mathfn import compute_dtype
from .runtime import blocks, cuda, launch, xp_for
from .storage import access

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["apply_residual_layer_norm", "residual_layer_norm", "residual_layer_norm_backward"]

# The gamma/beta gradients: about LN_PARTS blocks of COLUMN_THREADS (words along the row, row
# lanes), each summing its columns over one part of the rows.
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
def _layer_norm_backward_kernel(dtype, stats, fmt, per):
    """dx for g, xhat, gamma and dx of `dtype` (in format `fmt`), rstd of `stats`."""
    ctype = compute_dtype(dtype).type
    zero = ctype(0)
    n = words.values_per_word(fmt)
    held = per * n                  # values per thread (a compile-time size)
    word2, word1, value, put2 = words.functions(fmt, dtype)
    load_stat = access(stats)[0]

    @cuda.jit
    def layer_norm_backward(g, xhat, rstd, gamma, dx):
        """dx = rstd (gh - mean(gh) - xhat mean(gh xhat)), gh = g gamma: the forward's layout,
        row blockIdx.x * blockDim.y + threadIdx.y, thread t holds its row's words t, t + T, ..."""
        row = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        d = g.shape[1]
        nw = d // n
        live = row < g.shape[0]            # a row past the end still joins every block reduction
        buf = cuda.shared.array(MAX_THREADS, ctype)
        gh = cuda.local.array(held, ctype)
        xh = cuda.local.array(held, ctype)
        s1 = zero
        s2 = zero
        for i in range(per):
            wi = tid + i * nt
            for k in range(n):
                gh[i * n + k] = zero
                xh[i * n + k] = zero
            if wi < nw and live:
                wg = word2(g, row, wi)
                wx = word2(xhat, row, wi)
                wgm = word1(gamma, wi)
                for k in range(n):
                    a = value(wg, k) * value(wgm, k)
                    b = value(wx, k)
                    gh[i * n + k] = a
                    xh[i * n + k] = b
                    s1 += a
                    s2 += a * b
        m1 = block_sum(buf, s1) / ctype(d)
        m2 = block_sum(buf, s2) / ctype(d)
        if not live:
            return
        r = load_stat(rstd[row])
        for i in range(per):
            wi = tid + i * nt
            if wi < nw:
                for k in range(n):
                    gh[i * n + k] = r * (gh[i * n + k] - m1 - xh[i * n + k] * m2)
                put2(dx, row, wi, gh, i * n)
    return layer_norm_backward


@functools.lru_cache(maxsize=None)
def _layer_norm_params_kernel(dtype, fmt):
    """The per-part column sums of g xhat and g (float64) for g, xhat of `dtype` in format `fmt`."""
    n = words.values_per_word(fmt)
    word2, _, value, _ = words.functions(fmt, dtype)
    across, down = COLUMN_THREADS
    cols = across * n

    @cuda.jit
    def layer_norm_params(g, xhat, rows_per_part, pgamma, pbeta):
        """Block (X, Y) of part blockIdx.y: thread (x, y) sums word blockIdx.x * X + x of rows
        start + y, start + y + Y, ... of the part in registers, then the Y sums of each column
        are added in order of y through shared memory (deterministic) into the part's row."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        wi = cuda.blockIdx.x * across + tx
        nw = g.shape[1] // n
        start = cuda.blockIdx.y * rows_per_part
        stop = min(start + rows_per_part, g.shape[0])
        tg = cuda.local.array(n, np.float64)
        tb = cuda.local.array(n, np.float64)
        for k in range(n):
            tg[k] = 0
            tb[k] = 0
        if wi < nw:
            row = start + ty
            while row < stop:
                wg = word2(g, row, wi)
                wx = word2(xhat, row, wi)
                for k in range(n):
                    gj = value(wg, k)
                    tg[k] += np.float64(gj * value(wx, k))
                    tb[k] += np.float64(gj)
                row += down
        sg = cuda.shared.array((down, cols), np.float64)
        sb = cuda.shared.array((down, cols), np.float64)
        for k in range(n):
            sg[ty, tx * n + k] = tg[k]
            sb[ty, tx * n + k] = tb[k]
        cuda.syncthreads()
        if ty == 0 and wi < nw:
            for k in range(n):
                s_g = sg[0, tx * n + k]
                s_b = sb[0, tx * n + k]
                for y in range(1, down):
                    s_g += sg[y, tx * n + k]
                    s_b += sb[y, tx * n + k]
                pgamma[cuda.blockIdx.y, wi * n + k] = s_g
                pbeta[cuda.blockIdx.y, wi * n + k] = s_b
    return layer_norm_params


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
    fmt = words.format_for(d, g, xhat, gamma, dx)
    t, per = row_layout(words.words(d, fmt))
    rows_in = rows_per_block(t)
    launch(_layer_norm_backward_kernel(g.dtype, rstd.dtype, fmt, per), blocks(n, rows_in), (t, rows_in),
           g, xhat, rstd, gamma, dx)
    if want_params:
        fmt = words.format_for(d, g, xhat)
        across = blocks(words.words(d, fmt), COLUMN_THREADS[0])
        parts = max(1, min(-(-LN_PARTS // across), -(-n // COLUMN_THREADS[1])))
        step = -(-n // parts)
        parts = -(-n // step)
        pgamma, pbeta = xp.empty((parts, d), np.float64), xp.empty((parts, d), np.float64)
        launch(_layer_norm_params_kernel(g.dtype, fmt), (across, parts), COLUMN_THREADS, g, xhat, step,
               pgamma, pbeta)
        _sum_parts(pgamma, 0, dgamma)
        _sum_parts(pbeta, 0, dbeta)
