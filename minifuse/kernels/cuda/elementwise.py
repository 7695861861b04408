"""GEMM epilogues on CUDA: y = act(y + bias) in place, and bias + GLU/SwiGLU.

Thread mapping: threadIdx.x + blockIdx.x * blockDim.x is the column (coalesced: a warp reads 32
neighbouring elements of a row), blockIdx.y walks rows with stride gridDim.y. Each thread loads
its bias element once and reuses it for every row it visits; there is no integer division.

Unfused, `act(x @ W.T + b)` costs a write of the GEMM result, a read and write for `+ b`, and a
read and write per activation step (GELU alone is several). Here the epilogue is one read and
one write of y, after cuBLAS wrote it.
"""
import functools

import numpy as np

from . import checks
from .mathfn import ACTIVATIONS, GATES, activations, compute_dtype
from .runtime import blocks, cuda, launch

ROW_BLOCKS = 1024   # blocks along the rows; each thread then handles rows/1024 rows


def _threads(width):
    """Threads per block along a row: a power of two in [32, 256] (small under the simulator)."""
    t = 32
    while t < width and t < 256:
        t *= 2
    return t


@functools.lru_cache(maxsize=None)
def _bias_act_kernel(activation, ct):
    act = activations(ct)[activation]
    ctype = np.dtype(ct).type

    @cuda.jit
    def bias_act(y, bias, has_bias):
        n, m = y.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= m:
            return
        b = ctype(bias[c]) if has_bias else ctype(0)
        r = cuda.blockIdx.y
        while r < n:
            y[r, c] = act(ctype(y[r, c]) + b)
            r += cuda.gridDim.y
    return bias_act


def apply_bias_act(y, bias, activation):
    """Checked-arguments entry: y (N, M) C-contiguous, bias (M,) contiguous or None."""
    n, m = y.shape
    if n == 0 or m == 0 or (bias is None and activation == "none"):
        return y
    t = _threads(m)
    kernel = _bias_act_kernel(activation, compute_dtype(y.dtype))
    # no bias: an empty view, never read (a row of y would alias y, and the simulator copies
    # every NumPy argument back after the launch)
    launch(kernel, (blocks(m, t), min(n, ROW_BLOCKS)), t, y, y[0, :0] if bias is None else bias,
           bias is not None)
    return y


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
    def bias_glu(y, bias, has_bias, out):
        n, h = out.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= h:
            return
        ba = ctype(bias[c]) if has_bias else ctype(0)
        bb = ctype(bias[h + c]) if has_bias else ctype(0)
        r = cuda.blockIdx.y
        while r < n:
            out[r, c] = act(ctype(y[r, c]) + ba) * (ctype(y[r, h + c]) + bb)
            r += cuda.gridDim.y
    return bias_glu


def apply_bias_glu(y2, bias, gate, out2):
    """Checked-arguments entry: y2 (N, 2H), out2 (N, H) C-contiguous, bias (2H,) or None."""
    n, h = out2.shape
    if n == 0 or h == 0:
        return out2
    t = _threads(h)
    kernel = _bias_glu_kernel(gate, compute_dtype(y2.dtype))
    launch(kernel, (blocks(h, t), min(n, ROW_BLOCKS)), t, y2, y2[0] if bias is None else bias,
           bias is not None, out2)
    return out2


def bias_glu(y, bias, gate, out=None):
    """gate(a) * b, a, b = split(y + bias) at the middle of the last dim; FIRST half is the gate.

    y (..., 2H), bias (2H,) or None, gate 'sigmoid' (GLU) or 'silu' (SwiGLU) -> (..., H).
    """
    fn = "bias_glu"
    xp = checks.float_array(fn, "y", y, min_ndim=1)
    like = ("y", y)
    width = y.shape[-1]
    if width % 2:
        raise ValueError(f"{fn}: 'y' last dim must be even (2H), got shape {tuple(y.shape)}")
    bias = checks.vector(fn, "bias", bias, width, "(2H,)", like)
    checks.choice(fn, "gate", gate, GATES)
    out = checks.output(fn, out, tuple(y.shape[:-1]) + (width // 2,), like, [("y", y), ("bias", bias)])
    apply_bias_glu(checks.rows(xp, y, width), bias, gate, out.reshape(-1, width // 2))
    return out
