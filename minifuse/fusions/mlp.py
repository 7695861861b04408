"""A two-layer MLP for training as ONE node: out = act(x W1^T + b1) W2^T + b2.

Two ``fused_linear_act`` nodes would save x, z = x W1^T and h = act(z + b1), fc2's input. h is
a pure function of z, so this node saves x and z only (``save='preact'``), or x only
(``save='recompute'``: z = x W1^T is redone in backward, one more GEMM), and recomputes h in
backward with the same epilogue kernel as forward. For a BERT-base MLP (hidden 4x the width)
h is 4 of the 6 activation-sized arrays the two nodes kept.

Backward, with g the output gradient (all sums over the leading dims):
    dW2 = g^T h,  db2 = sum g,  dh = g W2,
    dz, db1 = dh * act'(z + b1), sum of that   (one kernel, ``act_backward``),
    dW1 = dz^T x,  dx = dz W1.

Under ``mf.autocast`` (float32 input and weights) the node casts them to the autocast dtype
itself, as ``fused_transformer_layer`` does: the GEMMs and the activation run in that dtype, the
output is in it, and the parameters' gradients come back in float32, the weight-gradient GEMMs
and fc2's bias sum writing their float32 sums directly (fc1's bias gradient comes from the
activation's backward kernel in the autocast dtype, widened). On a GPU the node's forward and backward are
replayed from CUDA graphs from a signature's second call on (``node_graphs``).
"""
import numpy as np

from ..autograd.function import Function
from . import _args as A
from . import node_graphs
from .linear import ACTIVATIONS, GATED, SAVE, act_backward, act_forward, check_layer

__all__ = ["fused_mlp", "FusedMLP"]

_FLOAT32 = np.dtype(np.float32)


class FusedMLP(Function):
    same_dtype = False        # float32 input and weights under autocast, cast inside (fused_mlp checks dtypes)
    new_gradients = True

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, activation, save_preact, store_dtype=None, lower=None):
        """``lower``: the dtype the GEMMs run in (None: x's); the inputs are cast to it."""
        lower = x.dtype if lower is None else lower
        weights = (w1, b1, w2, b2)
        scalars = (activation, save_preact, store_dtype, lower)
        need = ctx.needs_input_grad[:5]
        # the parameters' gradients: in the caller's dtype (a layer's float32 sums), else the weights'
        grad_dtype = w1.dtype if ctx.grad_dtype is None else ctx.grad_dtype
        out, state = node_graphs.forward(node_graphs.signature("mlp", x, weights, need, scalars, grad_dtype),
                                         lambda x: _forward(x, weights, *scalars), (x,))
        ctx.save_for_backward(state)      # (freed after backward: the graphs' buffers are free again)
        ctx.meta = (A.kernels(x), x.shape, x.dtype, activation, lower, grad_dtype, need, b2 is not None)
        return out

    @staticmethod
    def backward(ctx, g):
        (state,) = ctx.saved_tensors
        return node_graphs.backward(state, lambda saved, g: _backward(*ctx.meta, saved, g), g)


def _forward(x, weights, activation, save_preact, store_dtype, lower):
    """The output and what backward needs: x's rows, the weights (in ``lower``) and z or None."""
    K = A.kernels(x)
    xp = K.xp
    w1, b1, w2, b2 = (A.restore(A.optional(xp, w), lower) for w in weights)
    x2 = A.restore(A.rows(xp, x, x.shape[-1]), lower)
    z = A.linear(K, x2, w1)
    h = act_forward(K, z, b1, activation, keep_z=save_preact)
    out = act_forward(K, A.linear(K, h, w2), b2, "none", keep_z=False)   # + b2 in place
    saved = (A.store(x2, store_dtype), w1, b1, w2, A.store(z if save_preact else None, store_dtype))
    return out.reshape(x.shape[:-1] + (w2.shape[0],)), saved


def _backward(K, x_shape, x_dtype, activation, lower, gd, need, has_b2, saved, g):
    """dx (in x's dtype), dW1, db1, dW2, db2 (in ``gd``); None where not wanted."""
    need_x, need_w1, need_b1, need_w2, need_b2 = need
    x2, w1, b1, w2, z = saved
    x2 = A.restore(x2, lower)
    z = A.linear(K, x2, w1) if z is None else A.restore(z, lower)
    g2 = A.restore(A.rows(K.xp, g, g.shape[-1]), lower)
    h = act_forward(K, z, b1, activation, keep_z=True)      # fc2's input, recomputed
    dw2 = A.matmul(K, g2.T, h, gd) if need_w2 else None
    db2 = A.sum_rows(K, g2, gd) if has_b2 and need_b2 else None
    dz, db1 = act_backward(K, A.matmul(K, g2, w2), z, b1, activation, b1 is not None and need_b1)
    dx = A.restore(A.matmul(K, dz, w1).reshape(x_shape), x_dtype) if need_x else None
    dw1 = A.matmul(K, dz.T, x2, gd) if need_w1 else None
    return dx, dw1, A.restore(db1, gd), dw2, db2


def fused_mlp(x, w1, b1, w2, b2, activation="gelu", save="preact", input_store_dtype=None):
    """act(x @ w1.T + b1) @ w2.T + b2 as one fused, recorded op.

    x (..., K), w1 (M, K), b1 (M,) or None, w2 (N, M) (or (N, M/2) for the gated activations
    'glu' and 'swiglu'), b2 (N,) or None -> (..., N). activation: as ``fused_linear_act``.
    save: 'preact' keeps x W1^T for backward, 'recompute' keeps only x.
    input_store_dtype: e.g. float16, the dtype the saved x (and pre-activation) is kept in.
    Under ``mf.autocast`` the GEMMs and the activation run in the autocast dtype (the output is
    in it); float32 inputs are cast inside the node, others first (as the taped ops cast them).
    """
    fn = "fused_mlp"
    lower = A.autocast_dtype(fn, "lower", x, w1, b1, w2, b2)
    if lower is not None and any(t is not None and t.dtype != _FLOAT32 for t in (x, w1, b1, w2, b2)):
        x, w1, b1, w2, b2 = A.autocast(fn, FusedMLP, x, w1, b1, w2, b2, policy="lower")
        lower = None
    A.choice(fn, "activation", activation, ACTIVATIONS)
    save_preact = A.choice(fn, "save", save, SAVE)
    A.tensor(fn, "x", x, min_ndim=1)
    m = check_layer(fn, x, ("w1", w1), ("b1", b1), activation)
    hidden = m // 2 if activation in GATED else m
    A.tensor(fn, "w2", w2, ("x", x))
    if w2.ndim != 2 or w2.shape[1] != hidden:
        raise ValueError(f"{fn}: 'w2' has shape {w2.shape}, expected (N, {hidden}): its inputs are the "
                         f"{hidden} hidden features of activation '{activation}'")
    A.vector(fn, "b2", b2, w2.shape[0], "(N,) with N = w2.shape[0]", ("x", x))
    return FusedMLP.apply(x, w1, b1, w2, b2, activation, save_preact,
                          A.store_dtype(fn, input_store_dtype, x.dtype if lower is None else lower), lower)

