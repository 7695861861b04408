"""Linear + bias + activation for training: act(x W^T + b) as one node on the tape.

Forward: the GEMM through NumPy's BLAS into a fresh buffer z (no bias), then one kernel that
writes act(z + b). Backward: one kernel for dz = g * act'(z + b) and the bias gradient, then
two GEMMs, dx = dz W and dW = dz^T x.

What is saved: x always (dW needs it), and z only with ``save='preact'``. With
``save='recompute'`` backward recomputes z = x W^T: one more GEMM (a third more FLOPs for this
layer) for N*M fewer saved elements. Activation 'none' saves x only: its slope is 1.
On CUDA tensors the GEMMs are cuBLAS (CuPy) and the kernels the CUDA backend's.
"""
from ..autograd.function import Function
from ..kernels.activations import GATE_OF, LINEAR_ACTIVATIONS
from . import _args as A

__all__ = ["fused_linear_act", "FusedLinearAct", "ACTIVATIONS", "SAVE"]

GATED = GATE_OF                                             # gated activation -> its gate
ACTIVATIONS = LINEAR_ACTIVATIONS
SAVE = {"preact": True, "recompute": False}


def act_forward(K, z, bias, activation, keep_z):
    """act(z + bias) for z (N, M) = x W^T: a new array when ``keep_z`` (z is saved for backward),
    else in place over z (the gated activations always write a new (N, M/2) array).
    K: the tensors' kernel package."""
    n, m = z.shape
    if activation in GATED:
        return K.apply_bias_glu(z, bias, GATED[activation], K.xp.empty((n, m // 2), z.dtype))
    return K.apply_bias_act(z, bias, activation, K.xp.empty((n, m), z.dtype) if keep_z else None)


def act_backward(K, g2, z, bias, activation, want_db):
    """(dz, db) for out = act(z + bias): dz = g2 * act'(z + bias) (gated: [da | db]) and the bias
    gradient summed over rows (None unless ``want_db``). One kernel each; z is not modified."""
    xp = K.xp
    n, m = z.shape
    db = xp.empty(m, z.dtype) if want_db else None
    dz = xp.empty((n, m), z.dtype)
    if activation in GATED:
        K.glu_backward(g2, z, bias, GATED[activation], None, dz, db)
    else:
        K.bias_act_backward(g2, z, bias, activation, dz, db)
    return dz, db


class FusedLinearAct(Function):
    """out = act(x W^T + b); with z = x W^T and dz = g * act'(z + b):
    dx = dz W,  dW = dz^T x,  db = sum of dz over all leading dims."""

    autocast = "lower"        # under mf.autocast: the GEMM and its epilogue in the autocast dtype
    new_gradients = True

    @staticmethod
    def forward(ctx, x, weight, bias, activation, save_preact, store_dtype=None):
        K = A.kernels(x)
        x2 = A.rows(K.xp, x, x.shape[-1])
        bias = A.optional(K.xp, bias)
        z = A.linear(K, x2, weight)
        keep_z = save_preact and activation != "none"
        out = act_forward(K, z, bias, activation, keep_z)
        ctx.save_for_backward(A.store(x2, store_dtype), weight, bias, A.store(z if keep_z else None, store_dtype))
        ctx.meta = (K, activation, x.shape, x.dtype)
        return out.reshape(x.shape[:-1] + (out.shape[1],))

    @staticmethod
    def backward(ctx, g):
        x2, weight, bias, z = ctx.saved_tensors
        K, activation, x_shape, dtype = ctx.meta
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x2 = A.restore(x2, dtype)
        g2 = A.rows(K.xp, g, g.shape[-1])
        want_db = bias is not None and need_b
        gd = ctx.grad_dtype
        if activation == "none":                            # identity: dz is g itself
            dz, db = g2, (A.sum_rows(K, g2, gd) if want_db else None)
        else:
            z = A.linear(K, x2, weight) if z is None else A.restore(z, dtype)
            dz, db = act_backward(K, g2, z, bias, activation, want_db)
        dx = A.matmul(K, dz, weight).reshape(x_shape) if need_x else None
        dw = A.matmul(K, dz.T, x2, gd) if need_w else None
        return dx, dw, A.restore(db, gd)


def fused_linear_act(x, weight, bias=None, activation="none", save="preact", input_store_dtype=None):
    """act(x @ weight.T + bias) as one fused, recorded op.

    x (..., K), weight (M, K), bias (M,) or None -> (..., M), or (..., M/2) for the gated
    activations 'glu' and 'swiglu' (the first half of x W^T + b is the gate).
    activation: 'none', 'relu', 'gelu' (exact erf), 'gelu_tanh', 'silu', 'sigmoid', 'tanh',
    'glu', 'swiglu'. save: 'preact' keeps x W^T for backward, 'recompute' recomputes it there.
    input_store_dtype: e.g. float16, the dtype the saved x (and pre-activation) is kept in.
    """
    fn = "fused_linear_act"
    x, weight, bias = A.autocast(fn, FusedLinearAct, x, weight, bias)
    A.choice(fn, "activation", activation, ACTIVATIONS)
    save_preact = A.choice(fn, "save", save, SAVE)
    A.tensor(fn, "x", x, min_ndim=1)
    check_layer(fn, x, ("weight", weight), ("bias", bias), activation)
    return FusedLinearAct.apply(x, weight, bias, activation, save_preact,
                                A.store_dtype(fn, input_store_dtype, x.dtype))


def check_layer(fn, x, weight, bias, activation):
    """``weight`` = (name, Tensor (M, K)) with K = x.shape[-1], ``bias`` = (name, (M,) or None), same
    dtype as x; M even for the gated activations. Returns M."""
    (wname, w), (bname, b) = weight, bias
    A.tensor(fn, wname, w, ("x", x))
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"{fn}: '{wname}' has shape {w.shape}, expected (M, K) with K = x.shape[-1] = "
                         f"{x.shape[-1]}")
    if activation in GATED and w.shape[0] % 2:
        raise ValueError(f"{fn}: activation '{activation}' needs an even number of output features (2H), "
                         f"'{wname}' has shape {w.shape}")
    A.vector(fn, bname, b, w.shape[0], f"(M,) with M = {wname}.shape[0]", ("x", x))
    return w.shape[0]
