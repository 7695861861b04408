"""GEMM epilogue: y = act(y + bias), in place, one sweep over the GEMM output while it is hot.

The unfused NumPy path `act(x @ W.T + b)` writes the GEMM result, reads it back for the bias
add and writes a temporary, reads that for the activation (GELU alone makes several
temporaries) and writes the result: for 512x3072 float32 each pass is 6 MB each way. Here the
bias add and activation are one read and one write of y, with no allocation.
"""
from numba import prange

from . import checks, mathfn
from .jit import inline, kernel

# Codes passed to compiled code (strings would make one specialisation per name).
ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4, "sigmoid": 5, "tanh": 6}


@inline
def activate(x, code):
    """act(x) for an activation code. `code` is the same for a whole loop, so LLVM unswitches
    the branch out of the loop and vectorizes each arm."""
    if code == 1:
        return mathfn.relu(x)
    if code == 2:
        return mathfn.gelu(x)
    if code == 3:
        return mathfn.gelu_tanh(x)
    if code == 4:
        return mathfn.silu(x)
    if code == 5:
        return mathfn.sigmoid(x)
    if code == 6:
        return mathfn.tanh(x)
    return x


@inline
def by_code(code, body, args):
    """body(code, args) with `code` a compile-time constant in each arm.

    A loop that tests a runtime code (or flag) per element does not vectorize, and LLVM does
    not reliably unswitch a six-way branch out of a loop with several other conditions; called
    through here, the loop inside `body` is compiled once per activation, branch-free.
    """
    if code == 1:
        body(1, args)
    elif code == 2:
        body(2, args)
    elif code == 3:
        body(3, args)
    elif code == 4:
        body(4, args)
    elif code == 5:
        body(5, args)
    elif code == 6:
        body(6, args)
    else:
        body(0, args)


@inline
def by_flag(flag, body, args):
    """body(flag, args) with `flag` a compile-time constant in each arm (see `by_code`)."""
    if flag:
        body(True, args)
    else:
        body(False, args)


@kernel
def _bias_act(y, bias, has_bias, code):
    n, m = y.shape
    for i in prange(n):
        row = y[i]
        if has_bias:
            for j in range(m):
                row[j] = activate(row[j] + bias[j], code)
        else:
            for j in range(m):
                row[j] = activate(row[j], code)


def apply_bias_act(y, bias, code):
    """Checked-arguments entry shared by the callers in this package: y (N, M) C-contiguous,
    bias (M,) contiguous or None, same dtype."""
    _bias_act(y, y.reshape(-1)[:0] if bias is None else bias, bias is not None, code)


def bias_act_(y, bias, activation):
    """y = act(y + bias) in place on a 2-D C-contiguous y (N, M); bias (M,) or None. Returns y.

    activation: 'none', 'relu', 'gelu' (exact erf), 'gelu_tanh', 'silu', 'sigmoid', 'tanh'.
    """
    fn = "bias_act_"
    checks.float_array(fn, "y", y, ndim=2)
    checks.c_contiguous(fn, "y", y)
    if not y.flags.writeable:
        raise ValueError(f"{fn}: 'y' is read-only (it is written in place)")
    bias = checks.vector(fn, "bias", bias, y.shape[1], "(M,)", ("y", y.dtype))
    code = checks.choice(fn, "activation", activation, ACTIVATIONS)
    apply_bias_act(y, bias, code)
    return y
