"""Linear + bias + activation: the GEMM through NumPy's BLAS, then the fused epilogue in place.

The GEMM runs outside Numba on purpose: BLAS called inside @njit goes through SciPy's second
OpenBLAS and measured 2-3.6x slower, and a BLAS call inside prange oversubscribes the cores
(platform.md). `np.matmul(..., out=)` writes straight into the result buffer, so the only
extra cost over the bare GEMM is one read+write sweep of the output by `epilogue`.
"""
import numpy as np

from . import checks
from .epilogue import ACTIVATIONS, apply_bias_act


def check_weight(fn, name, w, in_features, dtype):
    """weight (M, K) in PyTorch layout with K == in_features; returns M."""
    checks.float_array(fn, name, w, ndim=2, dtype=dtype)
    if w.shape[1] != in_features:
        raise ValueError(f"{fn}: '{name}' has shape {w.shape}, expected (M, K) with K = {in_features}")
    return w.shape[0]


def gemm(x2, w, out2):
    """out2 (N, M) = x2 (N, K) @ w.T, written into out2 (BLAS handles the transposed view)."""
    np.matmul(x2, w.T, out=out2)
    return out2


def linear_act(x, weight, bias, activation, out=None):
    """act(x @ weight.T + bias): x (..., K), weight (M, K), bias (M,) or None -> (..., M).

    A non-contiguous x is copied to a contiguous one first (BLAS needs a plain 2-D view).
    """
    fn = "linear_act"
    checks.float_array(fn, "x", x, min_ndim=1)
    dt = ("x", x.dtype)
    m = check_weight(fn, "weight", weight, x.shape[-1], dt)
    bias = checks.vector(fn, "bias", bias, m, "(M,)", dt)
    code = checks.choice(fn, "activation", activation, ACTIVATIONS)
    out = checks.output(fn, out, x.shape[:-1] + (m,), dt, [("x", x), ("weight", weight), ("bias", bias)])
    out2 = out.reshape(-1, m)
    gemm(checks.rows(x, x.shape[-1]), weight, out2)
    apply_bias_act(out2, bias, code)
    return out
