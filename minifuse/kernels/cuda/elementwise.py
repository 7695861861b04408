"""Elementwise kernels around a GEMM on CUDA: bias + activation and bias + GLU/SwiGLU, forward
(in place or into a buffer) and backward.

Thread mapping: threadIdx.x + blockIdx.x * blockDim.x is the column (coalesced: a warp reads 32
neighbouring elements of a row; in the forward bias + activation, 32 neighbouring 8-byte words,
`words.py`), blockIdx.y walks rows with stride gridDim.y, four rows per step. Each thread loads
its bias once and reuses it for every row it visits; there is no integer division.

Unfused, `act(x @ W.T + b)` costs a write of the GEMM result, a read and write for `+ b`, and a
read and write per activation step (GELU alone is several). Here the epilogue is one read and
one write of y, after cuBLAS wrote it.

Backward: a thread per column (coalesced), walking the rows r = blockIdx.y, + gridDim.y, ...; it
writes dy and adds its column's share of the bias gradient in a float64 register, stored once as
row blockIdx.y of a (parts, M) float64 array of partial sums, then added over the
parts by one small kernel (`_sum_parts`) in a fixed order: no atomics, the same result on every
run. The per-row weight gradient of the weighted SwiGLU (a sum over the columns of a row, which
span several blocks) is a block reduction per row and block, then the same `_sum_parts`.
"""
import functools

import numpy as np

from .. import validate
from ..activations import GATES
from . import words
from .blocks import COLUMN_THREADS, MAX_THREADS, block_sum
from .checks import CHECKS, flat_rows, rows
from .mathfn import activations, compute_dtype, derivatives
from .runtime import SIMULATOR, blocks, cuda, launch, row_threads, xp_for
from .storage import access

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["apply_bias_act", "apply_bias_glu", "bias_act_", "bias_act_backward", "bias_glu", "glu_backward"]

ROW_BLOCKS = 1024   # blocks along the rows; each thread then handles rows/1024 rows
# Blocks along the rows of a backward kernel: each writes one row of float64 partial sums, so
# enough for a full GPU (with the column blocks), few enough that the partials stay small
# (256 x 3072 x 8 B = 6 MB against the 50 MB of a 4096 x 3072 float32 dy).
PARTS = 256


@functools.lru_cache(maxsize=None)
def _sum_parts_kernel(dtype):
    ctype = compute_dtype(dtype).type
    store = access(dtype)[1]
    across, down = COLUMN_THREADS

    @cuda.jit
    def sum_parts(partial, out):
        """out[j] = sum over p of partial[p, j] (float64), rounded once to out's compute dtype
        and stored. Block (X, Y): column blockIdx.x * X + x; lane y adds the parts y, y + Y, ...;
        the lanes' sums are then added in order of y."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * across + tx
        acc = np.float64(0)
        if j < partial.shape[1]:
            p = ty
            while p < partial.shape[0]:
                acc += partial[p, j]
                p += down
        lanes = cuda.shared.array((down, across), np.float64)
        lanes[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and j < partial.shape[1]:
            total = lanes[0, tx]
            for y in range(1, down):
                total += lanes[y, tx]
            out[j] = store(ctype(total))
    return sum_parts


def _sum_parts(partial, axis, out):
    """out[...] = the float64 partial sums (2-D) added over `axis` in a fixed order (the same
    result on every run), in one kernel; out 1-D C-contiguous."""
    partial = partial if axis == 0 else partial.T
    if SIMULATOR:      # it transfers only contiguous NumPy arrays
        partial = np.ascontiguousarray(partial)
    launch(_sum_parts_kernel(out.dtype), blocks(partial.shape[1], COLUMN_THREADS[0]), COLUMN_THREADS, partial, out)


@functools.lru_cache(maxsize=None)
def _bias_act_kernel(activation, dtype, in_place, fmt):
    """out = act(y + bias), or in place, for arrays of `dtype`: thread c of a row takes its word c
    (`words.py`: four float16 or bfloat16 or two float32 values in one load and one store), so
    that each thread moves 8 bytes per memory instruction instead of 2 or 4."""
    ct = compute_dtype(dtype)
    act = activations(ct)[activation]
    ctype = ct.type
    zero = ctype(0)
    n = words.values_per_word(fmt)
    word2, word1, value, put2 = words.functions(fmt, dtype)

    @cuda.jit(device=True, inline=True)
    def apply(y, out, r, c, w, bv):
        vals = cuda.local.array(n, ctype)
        for k in range(n):
            vals[k] = act(value(w, k) + bv[k])
        if in_place:
            put2(y, r, c, vals, 0)
        else:
            put2(out, r, c, vals, 0)

    @cuda.jit
    def bias_act(y, bias, has_bias, out):
        """out = act(y + bias), or y itself when in_place (out unused then)."""
        rows = y.shape[0]
        nw = y.shape[1] // n
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= nw:
            return
        bv = cuda.local.array(n, ctype)    # this thread's bias values, loaded once for every row
        for k in range(n):
            bv[k] = zero
        if has_bias:
            wb = word1(bias, c)
            for k in range(n):
                bv[k] = value(wb, k)
        r = cuda.blockIdx.y
        g = cuda.gridDim.y
        # Four rows per step, all loads before any store: four independent loads in flight per
        # thread (a load after a store to the same array must wait: the compiler cannot prove
        # that they do not alias).
        while r + 3 * g < rows:
            w0 = word2(y, r, c)
            w1 = word2(y, r + g, c)
            w2 = word2(y, r + 2 * g, c)
            w3 = word2(y, r + 3 * g, c)
            apply(y, out, r, c, w0, bv)
            apply(y, out, r + g, c, w1, bv)
            apply(y, out, r + 2 * g, c, w2, bv)
            apply(y, out, r + 3 * g, c, w3, bv)
            r += 4 * g
        while r < rows:
            apply(y, out, r, c, word2(y, r, c), bv)
            r += g
    return bias_act


def apply_bias_act(y, bias, activation, out=None):
    """Checked-arguments entry: y (N, M) C-contiguous, bias (M,) contiguous or None; the result
    goes to y in place, or to `out` (N, M), a separate buffer, when given. Returns it."""
    n, m = y.shape
    if n == 0 or m == 0 or (out is None and bias is None and activation == "none"):
        return y if out is None else out
    result = y if out is None else out
    fmt = words.format_for(m, y, out, bias)
    mw = words.words(m, fmt)
    t = row_threads(mw)
    kernel = _bias_act_kernel(activation, y.dtype, out is None, fmt)
    # no bias / no out: empty views, never read / written (a row of y would alias y, and the
    # simulator copies every NumPy argument back after the launch)
    launch(kernel, (blocks(mw, t), min(n, ROW_BLOCKS)), t, y, y[0, :0] if bias is None else bias,
           bias is not None, y[:0] if out is None else out)
    return result


def bias_act_(y, bias, activation):
    """y = act(y + bias) in place on a 2-D C-contiguous y (N, M); bias (M,) or None. Returns y.

    activation: 'none', 'relu', 'gelu' (exact erf), 'gelu_tanh', 'silu', 'sigmoid', 'tanh'.
    """
    bias = validate.bias_act_(CHECKS, "bias_act_", y, bias, activation)
    return apply_bias_act(y, bias, activation)


@functools.lru_cache(maxsize=None)
def _bias_glu_kernel(gate, dtype):
    ct = compute_dtype(dtype)
    act = activations(ct)[gate]
    ctype = ct.type
    load, store = access(dtype)

    @cuda.jit
    def bias_glu(y, bias, has_bias, w, has_w, out):
        n, h = out.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= h:
            return
        ba = load(bias[c]) if has_bias else ctype(0)
        bb = load(bias[h + c]) if has_bias else ctype(0)
        r = cuda.blockIdx.y
        while r < n:
            v = act(load(y[r, c]) + ba) * (load(y[r, h + c]) + bb)
            out[r, c] = store(v * load(w[r]) if has_w else v)
            r += cuda.gridDim.y
    return bias_glu


def apply_bias_glu(y2, bias, gate, out2, w=None):
    """Checked-arguments entry: y2 (N, 2H), out2 (N, H) C-contiguous, bias (2H,) or None;
    w (N,) or None, one weight per row multiplied into the result (weighted SwiGLU)."""
    n, h = out2.shape
    if n == 0 or h == 0:
        return out2
    t = row_threads(h)
    kernel = _bias_glu_kernel(gate, y2.dtype)
    launch(kernel, (blocks(h, t), min(n, ROW_BLOCKS)), t, y2, y2[0] if bias is None else bias,
           bias is not None, y2[0, :0] if w is None else w, w is not None, out2)
    return out2


def bias_glu(y, bias, gate, out=None):
    """gate(a) * b, a, b = split(y + bias) at the middle of the last dim; FIRST half is the gate.

    y (..., 2H), bias (2H,) or None, gate 'sigmoid' (GLU) or 'silu' (SwiGLU) -> (..., H).
    """
    fn = "bias_glu"
    bias, out = validate.bias_glu(CHECKS, fn, y, bias, gate, GATES, out)
    width = y.shape[-1]
    apply_bias_glu(rows(xp_for(fn, "y", y), y, width), bias, gate, flat_rows(out, width // 2))
    return out


# ---- backward ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _bias_act_backward_kernel(activation, dtype):
    ct = compute_dtype(dtype)
    slope = derivatives(ct)[activation]
    ctype = ct.type
    load, store = access(dtype)

    @cuda.jit
    def bias_act_backward(g, y, bias, has_bias, dy, partial, want_dbias):
        n, m = g.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= m:
            return
        b = load(bias[c]) if has_bias else ctype(0)
        acc = np.float64(0)
        r = cuda.blockIdx.y
        while r < n:
            d = load(g[r, c]) * slope(load(y[r, c]) + b)
            dy[r, c] = store(d)
            acc += np.float64(d)
            r += cuda.gridDim.y
        if want_dbias:
            partial[cuda.blockIdx.y, c] = acc
    return bias_act_backward


def bias_act_backward(g, y, bias, activation, dy, dbias=None):
    """dy = g * act'(y + bias); dbias = sum over rows of dy, when `dbias` (M,) is given.
    g, y, dy (N, M) C-contiguous; bias (M,) or None."""
    n, m = g.shape
    want_dbias = dbias is not None
    if n == 0 or m == 0:
        if want_dbias:
            dbias[...] = 0
        return
    xp = xp_for("bias_act_backward", "g", g)
    t, parts = row_threads(m), min(n, PARTS)
    partial = xp.empty((parts, m) if want_dbias else (1, 1), np.float64)    # (1, 1): unused
    launch(_bias_act_backward_kernel(activation, g.dtype), (blocks(m, t), parts), t,
           g, y, y[0, :0] if bias is None else bias, bias is not None, dy, partial, want_dbias)
    if want_dbias:
        _sum_parts(partial, 0, dbias)


@functools.lru_cache(maxsize=None)
def _glu_backward_kernel(gate, has_w, dtype):
    ct = compute_dtype(dtype)
    act, slope = activations(ct)[gate], derivatives(ct)[gate]
    ctype = ct.type
    load, store = access(dtype)
    nbuf = MAX_THREADS if has_w else 1           # shared memory only for the row reductions

    @cuda.jit
    def glu_backward(g, y, bias, has_bias, w, dy, partial, want_dbias, dw_part):
        n, h = g.shape
        tid = cuda.threadIdx.x
        c = cuda.blockIdx.x * cuda.blockDim.x + tid
        active = c < h                # no early return: every thread joins the row reductions
        buf = cuda.shared.array(nbuf, np.float64)
        ba = load(bias[c]) if has_bias and active else ctype(0)
        bb = load(bias[h + c]) if has_bias and active else ctype(0)
        acc_a = np.float64(0)
        acc_b = np.float64(0)
        r = cuda.blockIdx.y
        while r < n:
            term = np.float64(0)
            if active:
                a = load(y[r, c]) + ba
                b = load(y[r, h + c]) + bb
                gate_a = act(a)
                gi = load(g[r, c])
                gw = gi * load(w[r])
                da = gw * slope(a) * b
                db = gw * gate_a
                dy[r, c] = store(da)
                dy[r, h + c] = store(db)
                acc_a += np.float64(da)
                acc_b += np.float64(db)
                if has_w:
                    term = np.float64(gate_a * b * gi)
            if has_w:                 # dw[r] = sum_j gate(a) b g: this block's columns
                s = block_sum(buf, term)
                if tid == 0:
                    dw_part[r, cuda.blockIdx.x] = s
            r += cuda.gridDim.y
        if want_dbias and active:
            partial[cuda.blockIdx.y, c] = acc_a
            partial[cuda.blockIdx.y, h + c] = acc_b
    return glu_backward


def glu_backward(g, y, bias, gate, w, dy, dbias=None, dw=None):
    """The GLU backward (da, db, the bias and per-row weight gradients): the arguments and
    formulas of `minifuse.kernels.cpu.elementwise.glu_backward`."""
    n, h = g.shape
    want_dbias, has_w = dbias is not None, w is not None
    if n == 0 or h == 0:
        if want_dbias:
            dbias[...] = 0
        if has_w:
            dw[...] = 0
        return
    xp = xp_for("glu_backward", "g", g)
    t, parts = row_threads(h), min(n, PARTS)
    nbx = blocks(h, t)
    partial = xp.empty((parts, 2 * h) if want_dbias else (1, 1), np.float64)    # (1, 1): unused
    dw_part = xp.empty((n, nbx) if has_w else (1, 1), np.float64)
    launch(_glu_backward_kernel(gate, has_w, g.dtype), (nbx, parts), t,
           g, y, y[0, :0] if bias is None else bias, bias is not None, xp.ones(n, y.dtype) if w is None else w, dy, partial,
           want_dbias, dw_part)
    if want_dbias:
        _sum_parts(partial, 0, dbias)
    if has_w:
        _sum_parts(dw_part, 1, dw)
