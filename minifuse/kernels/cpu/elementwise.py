"""Elementwise kernels around a GEMM: bias + activation and bias + gated linear unit, forward
(in place or into a buffer) and backward, each one parallel sweep over the rows.

Unfused, ``act(x @ W.T + b)`` writes the GEMM result, reads it back for the bias add and writes a
temporary, reads that for the activation (GELU alone makes several temporaries) and writes the
result: for 512x3072 float32 each pass is 6 MB each way. Here bias and activation are one read
and one write. A GLU reads each input element once and writes the half-width result directly.

Backward kernels read their inputs once, write the input gradient once and accumulate the
reductions (bias, per-row weight gradients) in the same sweep. Parameter gradients use a fixed
number of row chunks, ``CHUNKS``: each chunk adds its rows into its own float64 row of partial
sums, then one short loop adds the chunks up. Float64 partials keep the sum as accurate as
NumPy's pairwise sum; a fixed chunk count keeps the result independent of the thread count.

Each kernel hands its row loop to `mathfn.by_code` / `by_flag`, which call it with the code or
flag as a constant: every arm compiles to its own branch-free loop that LLVM vectorizes (with the
code tested inside the loop it stayed scalar, 6-9x slower). A missing bias is a zero vector.
"""
import numpy as np
from numba import prange

from .. import validate
from ..activations import CODES, GATES
from . import checks, mathfn
from .jit import inline, kernel
from .mathfn import activate, by_code, by_flag, by_flags, derivative
from .rows import row_sum

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["apply_bias_act", "apply_bias_glu", "bias_act_", "bias_act_backward", "bias_glu", "glu_backward"]

# Row chunks of a parameter-gradient reduction: enough for load balance on a few cores, few
# enough that the (CHUNKS, M) float64 partial sums stay small.
CHUNKS = 16


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


def _bias_or_zeros(bias, m, dtype):
    return np.zeros(m, dtype) if bias is None else bias


# ---- bias + activation ----------------------------------------------------------------------

@inline
def _bias_act_rows(code, args):
    y, bias, out, in_place, i = args
    if in_place:             # one array in the loop: a second, possibly aliased one would keep it scalar
        r = y[i]
        for j in range(r.shape[0]):
            r[j] = activate(r[j] + bias[j], code)
    else:
        yi, oi = y[i], out[i]
        for j in range(yi.shape[0]):
            oi[j] = activate(yi[j] + bias[j], code)


@kernel
def _bias_act(y, bias, code, out, in_place):
    for i in prange(y.shape[0]):
        by_code(code, _bias_act_rows, (y, bias, out, in_place, i))


def apply_bias_act(y, bias, activation, out=None):
    """Checked-arguments entry: act(y + bias) for y (N, M) C-contiguous, bias (M,) contiguous or
    None, into `out` (N, M) when given, else in place. Returns the result."""
    _bias_act(y, _bias_or_zeros(bias, y.shape[1], y.dtype), CODES[activation], y if out is None else out,
              out is None)
    return y if out is None else out


def bias_act_(y, bias, activation):
    """y = act(y + bias) in place on a 2-D C-contiguous y (N, M); bias (M,) or None. Returns y.

    activation: a name of `minifuse.kernels.activations` ('none', 'relu', 'gelu' (exact erf),
    'gelu_tanh', 'silu', 'sigmoid', 'tanh').
    """
    bias = validate.bias_act_(checks.CHECKS, "bias_act_", y, bias, activation)
    return apply_bias_act(y, bias, activation)


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
def _bias_act_backward(g, y, bias, code, dy, dbias, want_dbias):
    n, m = g.shape
    nc = min(n, CHUNKS)
    partial = np.zeros((nc, m), np.float64)     # summed always: a float64 row in cache is cheap
    for c in prange(nc):
        lo, hi = chunk_rows(c, n, nc)
        by_code(code, _bias_act_backward_rows, (g, y, bias, dy, partial[c], lo, hi))
    if want_dbias:
        sum_chunks(partial, dbias)


def bias_act_backward(g, y, bias, activation, dy, dbias=None):
    """dy = g * act'(y + bias); dbias = sum over rows of dy, when `dbias` (M,) is given.
    g, y, dy (N, M) C-contiguous; bias (M,) or None."""
    m = g.shape[1]
    _bias_act_backward(g, y, _bias_or_zeros(bias, m, y.dtype), CODES[activation], dy,
                       np.empty(0, y.dtype) if dbias is None else dbias, dbias is not None)


# ---- gated linear units: out = gate(a) * b (* w per row), [a | b] = y + bias ------------------

@inline
def gate_and_slope(a, silu):
    """(gate(a), gate'(a)) for the SiLU gate (SwiGLU) or the sigmoid gate (GLU)."""
    if silu:
        return mathfn.silu(a), mathfn.silu_slope(a)
    return mathfn.sigmoid(a), mathfn.sigmoid_slope(a)


@inline
def _glu_rows(silu, args):
    y, bias, w, out, i = args
    yi, oi, wi = y[i], out[i], w[i]
    h = oi.shape[0]
    for j in range(h):
        oi[j] = gate_and_slope(yi[j] + bias[j], silu)[0] * (yi[h + j] + bias[h + j]) * wi


@kernel
def _bias_glu(y, bias, silu, w, out):
    for i in prange(out.shape[0]):
        by_flag(silu, _glu_rows, (y, bias, w, out, i))


def _gate(gate):
    return gate == "silu"


def apply_bias_glu(y2, bias, gate, out2, w=None):
    """Checked-arguments entry: out2 = gate(a) * b (* w), [a | b] = y2 + bias; y2 (N, 2H) and out2
    (N, H) C-contiguous, bias (2H,) or None, w (N,) one weight per row or None."""
    n, h = out2.shape
    if n:
        _bias_glu(y2, _bias_or_zeros(bias, 2 * h, y2.dtype), _gate(gate),
                  np.ones(n, y2.dtype) if w is None else w, out2)
    return out2


def bias_glu(y, bias, gate, out=None):
    """gate(a) * b, a, b = split(y + bias) at the middle of the last dim; FIRST half is the gate.

    y (..., 2H), bias (2H,) or None, gate 'sigmoid' (GLU) or 'silu' (SwiGLU) -> (..., H).
    """
    bias, out = validate.bias_glu(checks.CHECKS, "bias_glu", y, bias, gate, GATES, out)
    width = y.shape[-1]
    apply_bias_glu(checks.rows(np, y, width), bias, gate, checks.flat_rows(out, width // 2))
    return out


@inline
def _glu_backward_rows(silu, has_w, args):
    # silu, has_w: constants here. The weight gradient dw[i] = sum_j gate b g is
    # a sum: summed in this loop it would be a sequential chain (no reassociation here, it
    # would break `exp`'s range reduction) and the loop would not vectorize (5x slower); the
    # terms go to a scratch row instead, summed by `row_sum`, which may reassociate.
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
def _glu_backward(g, y, bias, silu, w, has_w, dy, dbias, want_dbias, dw):
    n, h = g.shape
    nc = min(n, CHUNKS)
    partial = np.zeros((nc, 2 * h), np.float64)
    for c in prange(nc):
        lo, hi = chunk_rows(c, n, nc)
        by_flags(silu, has_w, _glu_backward_rows, (g, y, bias, w, dy, dw, partial[c], lo, hi))
    if want_dbias:
        sum_chunks(partial, dbias)


def glu_backward(g, y, bias, gate, w, dy, dbias=None, dw=None):
    """Backward of out = gate(a) * b (* w per row), [a | b] = y + bias:

        da = g w gate'(a) b,   db = g w gate(a),   dw[i] = sum_j gate(a) b g,
        dbias = sum over rows of [da | db]   (when `dbias` (2H,) is given).
    g (N, H), y and dy (N, 2H) C-contiguous, bias (2H,) or None, w (N,) or None (no weights);
    dw (N,) is written when w is given.
    """
    n, h = g.shape
    empty = np.empty(0, y.dtype)
    _glu_backward(g, y, _bias_or_zeros(bias, 2 * h, y.dtype), _gate(gate), np.ones(n, y.dtype) if w is None else w,
                  w is not None, dy, empty if dbias is None else dbias, dbias is not None, empty if dw is None else dw)
