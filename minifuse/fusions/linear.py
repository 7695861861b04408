"""Linear + bias + activation for training: act(x W^T + b) as one node on the tape.

Forward: the GEMM through NumPy's BLAS into a fresh buffer z (no bias), then one kernel that
writes act(z + b). Backward: one kernel for dz = g * act'(z + b) and the bias gradient, then
two GEMMs, dx = dz W and dW = dz^T x.

What is saved: x always (dW needs it), and z only with ``save='preact'``. With
``save='recompute'`` backward recomputes z = x W^T: one more GEMM (a third more FLOPs for this
layer) for N*M fewer saved elements. Activation 'none' saves x only: its slope is 1.
"""
import numpy as np

from ..autograd.function import Function
from ..kernels.cpu import epilogue, glu, training
from ..kernels.cpu.linear import gemm
from . import _args as A

__all__ = ["fused_linear_act", "FusedLinearAct", "ACTIVATIONS", "SAVE"]

GATED = {"glu": False, "swiglu": True}                      # value: SiLU gate
ACTIVATIONS = {**epilogue.ACTIVATIONS, **{name: name for name in GATED}}
SAVE = {"preact": True, "recompute": False}


class FusedLinearAct(Function):
    """out = act(x W^T + b); with z = x W^T and dz = g * act'(z + b):
    dx = dz W,  dW = dz^T x,  db = sum of dz over all leading dims."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation, save_preact, store_dtype=None):
        x2 = A.rows(x, x.shape[-1])
        n, m = x2.shape[0], weight.shape[0]
        bias = A.contiguous(bias)
        z = gemm(x2, weight, np.empty((n, m), x.dtype))
        code = ACTIVATIONS[activation]
        if activation in GATED:
            out = np.empty((n, m // 2), x.dtype)
            if n:
                glu.apply_bias_glu(z, bias, glu.GATES["silu" if GATED[activation] else "sigmoid"], out)
        elif save_preact and code != 0:
            out = np.empty((n, m), x.dtype)
            training.bias_act_forward(z, A.or_empty(bias, x.dtype), bias is not None, code, out)
        else:                                               # z is not kept: act in place
            out = z
            if n:
                epilogue.apply_bias_act(z, bias, code)
        keep_z = save_preact and code != 0
        ctx.save_for_backward(A.store(x2, store_dtype), weight, bias, A.store(z if keep_z else None, store_dtype))
        ctx.meta = (activation, x.shape, x.dtype)
        return out.reshape(x.shape[:-1] + (out.shape[1],))

    @staticmethod
    def backward(ctx, g):
        x2, weight, bias, z = ctx.saved_tensors
        activation, x_shape, dtype = ctx.meta
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        code = ACTIVATIONS[activation]
        x2 = A.restore(x2, dtype)
        n, m = x2.shape[0], weight.shape[0]
        g2 = A.rows(g, g.shape[-1])
        want_db = bias is not None and need_b
        db = np.empty(m if want_db else 0, dtype)
        if code == 0:                                       # identity: dz is g itself
            dz = g2
            if want_db:
                db = g2.sum(axis=0)
        else:
            z = gemm(x2, weight, np.empty((n, m), dtype)) if z is None else A.restore(z, dtype)
            dz = np.empty((n, m), dtype)
            b = A.or_empty(bias, dtype)
            if activation in GATED:
                training.glu_backward(g2, z, b, bias is not None, GATED[activation], np.ones(n, dtype), False,
                                      dz, db, want_db, np.empty(0, dtype))
            else:
                training.bias_act_backward(g2, z, b, bias is not None, code, dz, db, want_db)
        dx = (dz @ weight).reshape(x_shape) if need_x else None
        dw = dz.T @ x2 if need_w else None
        return dx, dw, (db if want_db else None)


def fused_linear_act(x, weight, bias=None, activation="none", save="preact", input_store_dtype=None):
    """act(x @ weight.T + bias) as one fused, recorded op.

    x (..., K), weight (M, K), bias (M,) or None -> (..., M), or (..., M/2) for the gated
    activations 'glu' and 'swiglu' (the first half of x W^T + b is the gate).
    activation: 'none', 'relu', 'gelu' (exact erf), 'gelu_tanh', 'silu', 'sigmoid', 'tanh',
    'glu', 'swiglu'. save: 'preact' keeps x W^T for backward, 'recompute' recomputes it there.
    input_store_dtype: e.g. float16, the dtype the saved x (and pre-activation) is kept in.
    """
    fn = "fused_linear_act"
    A.choice(fn, "activation", activation, ACTIVATIONS)
    save_preact = A.choice(fn, "save", save, SAVE)
    A.tensor(fn, "x", x, min_ndim=1)
    A.tensor(fn, "weight", weight, ("x", x))
    if weight.ndim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"{fn}: 'weight' has shape {weight.shape}, expected (M, K) with K = x.shape[-1] = "
                         f"{x.shape[-1]}")
    if activation in GATED and weight.shape[0] % 2:
        raise ValueError(f"{fn}: activation '{activation}' needs an even number of output features (2H), "
                         f"'weight' has shape {weight.shape}")
    A.vector(fn, "bias", bias, weight.shape[0], "(M,) with M = weight.shape[0]", ("x", x))
    return FusedLinearAct.apply(x, weight, bias, activation, save_preact,
                                A.store_dtype(fn, input_store_dtype, x.dtype))
