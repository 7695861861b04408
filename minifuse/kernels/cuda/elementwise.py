"""GEMM epilogues on CUDA: y = act(y + bias) in place, and bias + GLU/SwiGLU.

Thread mapping: threadIdx.x + blockIdx.x * blockDim.x is the column (coalesced: a warp reads 32
neighbouring elements of a row), blockIdx.y walks rows with stride gridDim.y, four rows per step. Each thread loads
its bias element once and reuses it for every row it visits; there is no integer division.

Unfused, `act(x @ W.T + b)` costs a write of the GEMM result, a read and write for `+ b`, and a
read and write per activation step (GELU alone is several). Here the epilogue is one read and
one write of y, after cuBLAS wrote it.
"""
import functools

import numpy as np

from .. import validate
from . import checks
from .mathfn import ACTIVATIONS, GATES, activations, compute_dtype
from .runtime import blocks, cuda, launch, row_threads, xp_for

ROW_BLOCKS = 1024   # blocks along the rows; each thread then handles rows/1024 rows


@functools.lru_cache(maxsize=None)
def _bias_act_kernel(activation, ct, in_place=True, pairs=False):
    """out = act(y + bias), or in place. With ``pairs`` (float32 only) y and out are complex64
    views (N, M/2): a complex64 is two neighbouring float32s (real, imag), so each thread moves
    8 bytes per load and store instead of 4. Fewer, wider memory instructions: H200, 4096 x 3072
    gelu_tanh in place, 28.0-28.2 us against 32.3 us one float per thread (torch's F.gelu:
    27.7-28.1 us; a plain copy of those bytes: 23.8 us; BENCHMARKS.md)."""
    act = activations(ct)[activation]
    ctype = np.dtype(ct).type
    zero = ctype(0)

    @cuda.jit(device=True, inline=True)
    def bias_at(bias, has_bias, c):
        """The bias of this thread's column, or of its two columns (b0, b1) for pairs."""
        if not has_bias:
            return zero, zero
        if pairs:                          # compile-time constants: one arm is compiled
            return ctype(bias[2 * c]), ctype(bias[2 * c + 1])
        return ctype(bias[c]), zero

    @cuda.jit(device=True, inline=True)
    def f(v, b):
        if pairs:
            return complex(act(v.real + b[0]), act(v.imag + b[1]))
        return act(ctype(v) + b[0])

    @cuda.jit(device=True, inline=True)
    def put(y, out, r, c, v):
        if in_place:
            y[r, c] = v
        else:
            out[r, c] = v

    @cuda.jit
    def bias_act(y, bias, has_bias, out):
        """out = act(y + bias), or y itself when in_place (out unused then)."""
        n, m = y.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= m:
            return
        b = bias_at(bias, has_bias, c)     # loaded once, reused for every row
        r = cuda.blockIdx.y
        g = cuda.gridDim.y
        # Four rows per step, all loads before any store: four independent loads in flight per
        # thread (a load after a store to the same array must wait, the compiler cannot prove
        # they do not alias). H100, 4096 x 3072 float32 gelu_tanh: 38.7 us in four-row steps
        # against 58.8 us one row at a time (2048 row blocks); a plain copy takes 36 us.
        while r + 3 * g < n:
            v0 = y[r, c]
            v1 = y[r + g, c]
            v2 = y[r + 2 * g, c]
            v3 = y[r + 3 * g, c]
            put(y, out, r, c, f(v0, b))
            put(y, out, r + g, c, f(v1, b))
            put(y, out, r + 2 * g, c, f(v2, b))
            put(y, out, r + 3 * g, c, f(v3, b))
            r += 4 * g
        while r < n:
            put(y, out, r, c, f(y[r, c], b))
            r += g
    return bias_act


def _pairs(a):
    """``a`` (N, M) float32 as complex64 (N, M/2), or None where it cannot be viewed so (odd M,
    not C-contiguous, not 8-byte aligned)."""
    if a.dtype != np.float32 or a.shape[1] % 2 or not a.flags.c_contiguous:
        return None
    address = a.data.ptr if hasattr(a.data, "ptr") else a.ctypes.data
    return a.view(np.complex64) if address % 8 == 0 else None


def apply_bias_act(y, bias, activation, out=None):
    """Checked-arguments entry: y (N, M) C-contiguous, bias (M,) contiguous or None; the result
    goes to y in place, or to `out` (N, M), a separate buffer, when given. Returns it."""
    n, m = y.shape
    if n == 0 or m == 0 or (out is None and bias is None and activation == "none"):
        return y if out is None else out
    ct = compute_dtype(y.dtype)
    empty = y[0, :0]                       # a bias that is never read, of y's dtype
    result = y if out is None else out
    y2, out2 = _pairs(y), None if out is None else _pairs(out)
    pairs = y2 is not None and (out is None or out2 is not None)
    if pairs:
        y, out, m = y2, out2, m // 2
    t = row_threads(m)
    kernel = _bias_act_kernel(activation, ct, out is None, pairs)
    # no out: an empty view, never written (a row of y would alias y, and the simulator copies
    # every NumPy argument back after the launch)
    launch(kernel, (blocks(m, t), min(n, ROW_BLOCKS)), t, y, empty if bias is None else bias,
           bias is not None, y[:0] if out is None else out)
    return result


def bias_act_(y, bias, activation):
    """y = act(y + bias) in place on a 2-D C-contiguous y (N, M); bias (M,) or None. Returns y.

    activation: 'none', 'relu', 'gelu' (exact erf), 'gelu_tanh', 'silu', 'sigmoid', 'tanh'.
    """
    fn = "bias_act_"
    checks.float_array(fn, "y", y, ndim=2)
    checks.c_contiguous(fn, "y", y)
    bias = checks.vector(fn, "bias", bias, y.shape[1], "(M,)", ("y", y))
    checks.choice(fn, "activation", activation, ACTIVATIONS)
    return apply_bias_act(y, bias, activation)


@functools.lru_cache(maxsize=None)
def _bias_glu_kernel(gate, ct):
    act = activations(ct)[gate]
    ctype = np.dtype(ct).type

    @cuda.jit
    def bias_glu(y, bias, has_bias, w, has_w, out):
        n, h = out.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= h:
            return
        ba = ctype(bias[c]) if has_bias else ctype(0)
        bb = ctype(bias[h + c]) if has_bias else ctype(0)
        r = cuda.blockIdx.y
        while r < n:
            v = act(ctype(y[r, c]) + ba) * (ctype(y[r, h + c]) + bb)
            out[r, c] = v * ctype(w[r]) if has_w else v
            r += cuda.gridDim.y
    return bias_glu


def apply_bias_glu(y2, bias, gate, out2, w=None):
    """Checked-arguments entry: y2 (N, 2H), out2 (N, H) C-contiguous, bias (2H,) or None;
    w (N,) or None, one weight per row multiplied into the result (weighted SwiGLU)."""
    n, h = out2.shape
    if n == 0 or h == 0:
        return out2
    t = row_threads(h)
    kernel = _bias_glu_kernel(gate, compute_dtype(y2.dtype))
    launch(kernel, (blocks(h, t), min(n, ROW_BLOCKS)), t, y2, y2[0] if bias is None else bias,
           bias is not None, y2[0, :0] if w is None else w, w is not None, out2)
    return out2


def bias_glu(y, bias, gate, out=None):
    """gate(a) * b, a, b = split(y + bias) at the middle of the last dim; FIRST half is the gate.

    y (..., 2H), bias (2H,) or None, gate 'sigmoid' (GLU) or 'silu' (SwiGLU) -> (..., H).
    """
    fn = "bias_glu"
    bias, gate, out = validate.bias_glu(checks.CHECKS, fn, y, bias, gate, GATES, out)
    xp = xp_for(fn, "y", y)
    width = y.shape[-1]
    apply_bias_glu(checks.rows(xp, y, width), bias, gate, out.reshape(-1, width // 2))
    return out
