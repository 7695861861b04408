"""Linear + bias + activation: the GEMM through NumPy's BLAS, then the fused epilogue in place.

The GEMM runs outside Numba on purpose: BLAS called inside @njit goes through SciPy's second
OpenBLAS and measured 2-3.6x slower, and a BLAS call inside prange oversubscribes the cores.
`np.matmul(..., out=)` writes straight into the result buffer, so the only extra cost over the
bare GEMM is one read+write sweep of the output by the epilogue.
"""
import numpy as np

from ..activations import CODES
from . import batched
from .elementwise import _bias_act, _bias_or_zeros

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["linear", "bmm"]


def linear(x2, w, bias, activation, out2):
    """Checked-arguments entry: out2 (N, M) = act(x2 (N, K) @ w.T + bias), w (M, K), bias (M,) or
    None; BLAS reads the transposed view of w, no copy. Returns out2."""
    np.matmul(x2, w.T, out=out2)
    if bias is not None or activation != "none":   # the epilogue, in place
        _bias_act(out2, _bias_or_zeros(bias, out2.shape[1], out2.dtype), CODES[activation], out2, True)
    return out2


def bmm(a, b, out, trans_a=False, trans_b=False):
    """Checked-arguments entry: out[i] = op(a[i]) @ op(b[i]) for (batch, ., .) arrays, op the
    transpose for ``trans_a`` / ``trans_b`` (a view: BLAS reads it in place); out C-contiguous, of
    a's dtype or float32 for half-precision a and b (the float32 sums, not rounded to a's dtype).
    Many small products (attention's, per head): in chunks on a pool of threads, BLAS at one
    thread each (`batched`). Returns out."""
    if out.dtype != a.dtype:        # NumPy's matmul would multiply in a's dtype, then widen
        a, b = a.astype(out.dtype), b.astype(out.dtype)
    return batched.matmul(a.transpose(0, 2, 1) if trans_a else a, b.transpose(0, 2, 1) if trans_b else b, out)
