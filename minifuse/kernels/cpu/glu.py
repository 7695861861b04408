"""Bias + gated linear unit: out = gate(a) * b with a, b = first, second half of (y + bias).

Unfused, `y + bias` is a full-width temporary, the split halves are read again for the gate
(a temporary), and the product another: three passes over 2H-wide data and two temporaries.
Here each output element reads its two inputs once and writes the half-width result directly.
"""
from numba import prange

from .. import validate
from . import checks, mathfn
from .jit import kernel

GATES = {"sigmoid": 0, "silu": 1}   # glu, swiglu


@kernel
def _bias_glu(y, bias, has_bias, gate, out):
    n, h = out.shape
    for i in prange(n):
        src = y[i]
        dst = out[i]
        for j in range(h):
            a = src[j]
            b = src[h + j]
            if has_bias:
                a += bias[j]
                b += bias[h + j]
            g = mathfn.silu(a) if gate == 1 else mathfn.sigmoid(a)
            dst[j] = g * b


def apply_bias_glu(y2, bias, gate_code, out2):
    """Checked-arguments entry: y2 (N, 2H) and out2 (N, H) C-contiguous, bias (2H,) or None."""
    _bias_glu(y2, y2.reshape(-1)[:0] if bias is None else bias, bias is not None, gate_code, out2)


def bias_glu(y, bias, gate, out=None):
    """gate(a) * b, a, b = split(y + bias) at the middle of the last dim; FIRST half is the gate.

    y (..., 2H), bias (2H,) or None, gate 'sigmoid' (GLU) or 'silu' (SwiGLU) -> (..., H).
    """
    bias, code, out = validate.bias_glu(checks.CHECKS, "bias_glu", y, bias, gate, GATES, out)
    width = y.shape[-1]
    apply_bias_glu(checks.rows(y, width), bias, code, out.reshape(-1, width // 2))
    return out
