"""Linear + bias + activation on CUDA: the GEMM through cuBLASLt (cublaslt.py: algorithms timed
per shape, the bias in the GEMM's epilogue, capturable in a CUDA graph), else CuPy's cuBLAS
matmul, written straight into its buffer; an activation is one fused pass over the output after
it (faster than cuBLASLt's own GELU epilogue in float32, which runs in the GEMM's tail at low
occupancy), except float16 and bfloat16 'relu' and 'gelu_tanh', which ride in that epilogue
(cublaslt.py).

float32 at precision 'high' or 'medium' (`minifuse.set_float32_matmul_precision`) runs on the
tensor cores: 'high' as the 3xTF32 split (tf32x3.py), 'medium' as one TF32 GEMM.

Where cuBLASLt does not apply (and under the simulator) the products are the array module's
matmul (`matmul`); bfloat16 ones there run in float32 and are rounded once, as a GEMM that
accumulates in float32 rounds them.
"""
import numpy as np

from ...precision import get_float32_matmul_precision
from . import cublaslt
from .elementwise import apply_bias_act
from .runtime import recording, xp_for
from .storage import BFLOAT16
from .tf32x3 import LO_FIRST, LO_MIDDLE, split3

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["linear", "bmm"]


def matmul(xp, a, b, out=None):
    """``xp.matmul(a, b, out=out)`` in a's dtype. bfloat16 operands are multiplied in float32 and
    the product rounded to bfloat16 once: NumPy's matmul returns ml_dtypes' bfloat16 products as
    float32, and CuPy has no batched bfloat16 GEMM. (CuPy's GEMMs are not steps a replay keeps:
    replay.py.) ``out`` float32 for half-precision a and b: the product of their float32 values,
    as cuBLASLt's float32 sums."""
    if recording() is not None:
        recording().refuse("a GEMM through CuPy")
    if out is not None and out.dtype != a.dtype:
        out[...] = xp.matmul(a.astype(out.dtype), b.astype(out.dtype))
        return out
    if BFLOAT16 is None or a.dtype != BFLOAT16:
        return xp.matmul(a, b, out=out)
    product = xp.matmul(a.astype(np.float32), b.astype(np.float32))
    if out is None:
        return product.astype(a.dtype)
    out[...] = product
    return out


def _precision(a, out):
    """The float32 matmul precision a product of ``a`` into ``out`` runs at: 'highest' for other
    dtypes, for a product with one row or one column, and for a batch of several products
    (attention's, one per head): those are bound by memory, where the float32 cores keep up and
    the split would triple the bytes."""
    if a.dtype != np.float32 or 1 in out.shape[-2:] or (out.ndim == 3 and out.shape[0] > 1):
        return "highest"
    return get_float32_matmul_precision()


def _split_operands(a, b, a_inner, b_inner):
    """The 3xTF32 operands of a @ b, each split along its inner axis (tf32x3.py)."""
    xp = xp_for("bmm", "a", a)
    return split3(xp, a, LO_FIRST, a_inner), split3(xp, b, LO_MIDDLE, b_inner)


def lt_bmm(a, b, out, trans_a=False, trans_b=False):
    """cuBLASLt's out = op(a) @ op(b) (cublaslt.bmm) at the float32 matmul precision: 'high' as
    the 3xTF32 split, 'medium' as one TF32 GEMM. Returns False (nothing done) where cuBLASLt does
    not apply."""
    precision = _precision(a, out)
    if precision == "high" and cublaslt.applies(a, b, out):
        a, b = _split_operands(a, b, -2 if trans_a else -1, -1 if trans_b else -2)
    return cublaslt.bmm(a, b, out, trans_a=trans_a, trans_b=trans_b, tf32=precision != "highest")


def _gemm(x2, w, out2, bias):
    """out2 = x2 @ w.T (+ bias, in the GEMM's epilogue where cuBLASLt applies)."""
    if x2.shape[1] == 0:            # no input features: empty sums, 0 (no GEMM of inner size 0 asked of cuBLAS)
        out2[...] = 0
        return apply_bias_act(out2, bias, "none")
    if not isinstance(x2, np.ndarray):          # CuPy arrays (NumPy under the simulator: no cuBLASLt)
        precision = _precision(x2, out2)
        if precision == "high" and cublaslt.applies(bias, out2):   # (the split copies are aligned)
            x2, w = _split_operands(x2, w, -1, -1)
        if cublaslt.linear(x2, w, bias, out2, tf32=precision != "highest"):
            return out2
    matmul(xp_for("linear", "x", x2), x2, w.T, out=out2)    # (split operands multiply to the same sum)
    return apply_bias_act(out2, bias, "none")


def linear(x2, w, bias, activation, out2):
    """Checked-arguments entry: out2 (N, M) = act(x2 (N, K) @ w.T + bias), w (M, K), bias (M,) or
    None; no copy of w.T. Returns out2."""
    if activation == "none":
        return _gemm(x2, w, out2, bias)
    if (x2.shape[1] and not isinstance(x2, np.ndarray) and cublaslt.takes_activation(x2.dtype, activation)
            and cublaslt.linear(x2, w, bias, out2, activation=activation)):     # half: in the epilogue
        return out2
    return apply_bias_act(_gemm(x2, w, out2, None), bias, activation)


def bmm(a, b, out, trans_a=False, trans_b=False):
    """Checked-arguments entry: out[i] = op(a[i]) @ op(b[i]) for (batch, ., .) arrays, op the
    transpose for ``trans_a`` / ``trans_b`` (read in place); out C-contiguous. Through cuBLASLt
    where it applies (C-contiguous, aligned; float16 and bfloat16 on the tensor cores: CuPy's
    batched float16 matmul converts to float32 and back; float32 at the float32 matmul precision,
    `lt_bmm`), else the array module's matmul (`matmul`). Returns out."""
    if isinstance(a, np.ndarray) or not lt_bmm(a, b, out, trans_a=trans_a, trans_b=trans_b):  # NumPy: the simulator
        matmul(xp_for("bmm", "a", a), a.transpose(0, 2, 1) if trans_a else a, b.transpose(0, 2, 1) if trans_b else b,
               out=out)
    return out
