"""Fused training kernels on CUDA: the same entry points and signatures as
`minifuse.kernels.cpu.training` (activation and gate codes included), so that the fused autograd
functions of `minifuse.fusions` run one Python code on both devices. See docs/cuda.md.

Forward kernels are the inference epilogues of this package with the training outputs switched
on (`elementwise.apply_bias_act` into a separate buffer, the weighted GLU, LayerNorm also writing
xhat and rstd). Each backward is one kernel:

- bias + activation, GLU: a thread per column (coalesced), walking the rows r = blockIdx.y,
  + gridDim.y, ...; it writes dy and adds its column's share of the bias gradient in a float64
  register, stored once as row blockIdx.y of a (parts, M) float64 array of partial sums.
- residual + LayerNorm: a block per group of rows, as in the forward (row elements in registers,
  block reductions through shared memory); the gamma/beta gradients are float64 register sums
  per column, stored once per block.

The partial sums are then added over their first axis by the array module (`xp.sum`, one small
reduction) and stored in the gradient's dtype: no atomics, so the result is the same on every
run. The per-row weight gradient of the weighted SwiGLU (a sum over the columns of a row, which
span several blocks) is a block reduction per row and block, then the same `xp.sum` over the
blocks of a row.
"""
import functools

import numpy as np

from .elementwise import apply_bias_act as _bias_act_named, apply_bias_glu as _bias_glu_named
from .mathfn import ACTIVATIONS, GATES, activations, compute_dtype, derivatives
from .rowwise import MAX_THREADS, PER, _block_sum, apply_residual_layer_norm, threads_for
from .runtime import blocks, cuda, launch, row_threads, xp_for

__all__ = ["bias_act_forward", "bias_act_backward", "weighted_glu_forward", "glu_backward",
           "residual_layer_norm_forward", "residual_layer_norm_backward", "apply_bias_act", "apply_bias_glu"]

# Codes: the index of an activation in `mathfn.ACTIVATIONS` is its code in
# `minifuse.kernels.cpu.epilogue.ACTIVATIONS` (none 0, relu 1, ... tanh 6), and the index of a gate
# in `mathfn.GATES` its code in `minifuse.kernels.cpu.glu.GATES` (sigmoid 0, silu 1); tests/cuda
# checks both.

# Blocks along the rows of a backward kernel: each writes one row of float64 partial sums, so
# enough for a full GPU (with the column blocks), few enough that the partials stay small
# (256 x 3072 x 8 B = 6 MB against the 50 MB of a 4096 x 3072 float32 dy).
PARTS = 256
# Blocks of the LayerNorm backward, each over rows b, b + LN_PARTS, ...
LN_PARTS = 512


def _sum_parts(xp, partial, axis, out):
    """out[...] = the float64 partial sums added over `axis` (fixed order: deterministic)."""
    out[...] = xp.sum(partial, axis=axis)


# ---- bias + activation ------------------------------------------------------------------------

def apply_bias_act(y, bias, code):
    """y = act(y + bias) in place (`minifuse.kernels.cpu.epilogue.apply_bias_act`'s signature)."""
    return _bias_act_named(y, bias, ACTIVATIONS[code])


def bias_act_forward(y, bias, has_bias, code, out):
    """out = act(y + bias); y, out (N, M), bias (M,)."""
    _bias_act_named(y, bias if has_bias else None, ACTIVATIONS[code], out)


@functools.lru_cache(maxsize=None)
def _bias_act_backward_kernel(activation, ct):
    slope = derivatives(ct)[activation]
    ctype = np.dtype(ct).type

    @cuda.jit
    def bias_act_backward(g, y, bias, has_bias, dy, partial, want_dbias):
        n, m = g.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= m:
            return
        b = ctype(bias[c]) if has_bias else ctype(0)
        acc = np.float64(0)
        r = cuda.blockIdx.y
        while r < n:
            d = ctype(g[r, c]) * slope(ctype(y[r, c]) + b)
            dy[r, c] = d
            acc += np.float64(d)
            r += cuda.gridDim.y
        if want_dbias:
            partial[cuda.blockIdx.y, c] = acc
    return bias_act_backward


def bias_act_backward(g, y, bias, has_bias, code, dy, dbias, want_dbias):
    """dy = g * act'(y + bias); dbias = sum over rows of dy (when want_dbias). All (N, M)."""
    n, m = g.shape
    if n == 0 or m == 0:
        if want_dbias:
            dbias[...] = 0
        return
    xp = xp_for("bias_act_backward", "g", g)
    t, parts = row_threads(m), min(n, PARTS)
    partial = xp.empty((parts, m) if want_dbias else (1, 1), np.float64)    # (1, 1): unused
    launch(_bias_act_backward_kernel(ACTIVATIONS[code], compute_dtype(g.dtype)), (blocks(m, t), parts), t,
           g, y, bias if has_bias else y[0, :0], has_bias, dy, partial, want_dbias)
    if want_dbias:
        _sum_parts(xp, partial, 0, dbias)


# ---- gated linear units: out = gate(a) * b, [a | b] = y + bias --------------------------------

def apply_bias_glu(y2, bias, gate_code, out2):
    """out2 = gate(a) * b (`minifuse.kernels.cpu.glu.apply_bias_glu`'s signature)."""
    return _bias_glu_named(y2, bias, GATES[gate_code], out2)


def weighted_glu_forward(y, silu, w, out):
    """out[i, j] = gate(y[i, j]) * y[i, H + j] * w[i]; y (N, 2H), w (N,), out (N, H)."""
    _bias_glu_named(y, None, GATES[int(silu)], out, w)


@functools.lru_cache(maxsize=None)
def _glu_backward_kernel(gate, has_w, ct):
    act, slope = activations(ct)[gate], derivatives(ct)[gate]
    ctype = np.dtype(ct).type
    block_sum = _block_sum
    nbuf = MAX_THREADS if has_w else 1           # shared memory only for the row reductions

    @cuda.jit
    def glu_backward(g, y, bias, has_bias, w, dy, partial, want_dbias, dw_part):
        n, h = g.shape
        tid = cuda.threadIdx.x
        c = cuda.blockIdx.x * cuda.blockDim.x + tid
        active = c < h                # no early return: every thread joins the row reductions
        buf = cuda.shared.array(nbuf, np.float64)
        ba = ctype(bias[c]) if has_bias and active else ctype(0)
        bb = ctype(bias[h + c]) if has_bias and active else ctype(0)
        acc_a = np.float64(0)
        acc_b = np.float64(0)
        r = cuda.blockIdx.y
        while r < n:
            term = np.float64(0)
            if active:
                a = ctype(y[r, c]) + ba
                b = ctype(y[r, h + c]) + bb
                gate_a = act(a)
                gi = ctype(g[r, c])
                gw = gi * ctype(w[r])
                da = gw * slope(a) * b
                db = gw * gate_a
                dy[r, c] = da
                dy[r, h + c] = db
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


def glu_backward(g, y, bias, has_bias, silu, w, has_w, dy, dbias, want_dbias, dw):
    """Backward of out = gate(a) * b (* w per row), [a | b] = y + bias:

        da = g w gate'(a) b,   db = g w gate(a),   dw[i] = sum_j gate(a) b g,
        dbias = sum over rows of [da | db].
    g (N, H), y and dy (N, 2H), bias (2H,), w and dw (N,); w holds ones unless has_w.
    dw is written only when has_w.
    """
    n, h = g.shape
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
    launch(_glu_backward_kernel(GATES[int(silu)], bool(has_w), compute_dtype(g.dtype)), (nbx, parts), t,
           g, y, bias if has_bias else y[0, :0], has_bias, w, dy, partial, want_dbias, dw_part)
    if want_dbias:
        _sum_parts(xp, partial, 0, dbias)
    if has_w:
        _sum_parts(xp, dw_part, 1, dw)


# ---- residual + LayerNorm ------------------------------------------------------------------

def residual_layer_norm_forward(x, residual, has_residual, gamma, beta, eps, out, xhat, rstd):
    """v = x + residual; xhat = (v - mean) * rstd, rstd = 1 / sqrt(var + eps); out = xhat gamma + beta.
    Writes out, xhat and rstd (N,); one block per row, two-pass variance."""
    apply_residual_layer_norm(x, residual if has_residual else None, None, gamma, beta, eps, out, xhat, rstd)


@functools.lru_cache(maxsize=None)
def _layer_norm_backward_kernel(ct):
    ctype = np.dtype(ct).type
    block_sum = _block_sum
    zero = ctype(0)

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
                    gj = ctype(g[row, j])
                    xh[i] = ctype(xhat[row, j])
                    gh[i] = gj * ctype(gamma[j])
                    s1 += gh[i]
                    s2 += gh[i] * xh[i]
                    sg[i] += np.float64(gj * xh[i])
                    sb[i] += np.float64(gj)
            m1 = block_sum(buf, s1) / ctype(d)
            m2 = block_sum(buf, s2) / ctype(d)
            r = ctype(rstd[row])
            for i in range(PER):
                j = tid + i * nt
                if j < d:
                    dx[row, j] = r * (gh[i] - m1 - xh[i] * m2)
            row += cuda.gridDim.x
        if want_params:
            for i in range(PER):
                j = tid + i * nt
                if j < d:
                    pgamma[cuda.blockIdx.x, j] = sg[i]
                    pbeta[cuda.blockIdx.x, j] = sb[i]
    return layer_norm_backward


def residual_layer_norm_backward(g, xhat, rstd, gamma, dx, dgamma, dbeta, want_params):
    """With gh = g gamma, per row:  dx = rstd (gh - mean(gh) - xhat mean(gh xhat));
    dgamma = sum over rows of g xhat, dbeta = sum over rows of g (when want_params).
    The residual's gradient is dx itself (v = x + residual)."""
    n, d = g.shape
    if n == 0:
        if want_params:
            dgamma[...] = 0
            dbeta[...] = 0
        return
    xp = xp_for("residual_layer_norm_backward", "g", g)
    parts = min(n, LN_PARTS)
    shape = (parts, d) if want_params else (1, 1)                               # (1, 1): unused
    pgamma, pbeta = xp.empty(shape, np.float64), xp.empty(shape, np.float64)
    launch(_layer_norm_backward_kernel(compute_dtype(g.dtype)), parts, threads_for(d, "residual_layer_norm"),
           g, xhat, rstd, gamma, dx, pgamma, pbeta, want_params)
    if want_params:
        _sum_parts(xp, pgamma, 0, dgamma)
        _sum_parts(xp, pbeta, 0, dbeta)
