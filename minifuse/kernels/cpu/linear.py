"""Linear + bias + activation: the GEMM through NumPy's BLAS, then the fused epilogue in place.

The GEMM runs outside Numba on purpose: BLAS called inside @njit goes through SciPy's second
OpenBLAS and measured 2-3.6x slower, and a BLAS call inside prange oversubscribes the cores
(platform.md). `np.matmul(..., out=)` writes straight into the result buffer, so the only
extra cost over the bare GEMM is one read+write sweep of the output by `epilogue`.
"""
import numpy as np

from .. import validate
from . import checks
from .epilogue import ACTIVATIONS, apply_bias_act


def gemm(x2, w, out2):
    """out2 (N, M) = x2 (N, K) @ w.T, written into out2 (BLAS handles the transposed view)."""
    np.matmul(x2, w.T, out=out2)
    return out2


def linear_act(x, weight, bias, activation, out=None):
    """act(x @ weight.T + bias): x (..., K), weight (M, K), bias (M,) or None -> (..., M).

    A non-contiguous x is copied to a contiguous one first (BLAS needs a plain 2-D view).
    """
    bias, code, out = validate.linear_act(checks.CHECKS, "linear_act", x, weight, bias, activation,
                                          ACTIVATIONS, out)
    out2 = out.reshape(-1, weight.shape[0])
    gemm(checks.rows(x, x.shape[-1]), weight, out2)
    apply_bias_act(out2, bias, code)
    return out
