"""A whole post-LayerNorm transformer layer for training as ONE node on the tape.

    qkv = x Wqkv^T + bqkv,  a = attend(qkv) Wo^T + bo,  h = LN1(a + x),
    out = LN2(fc2(act(fc1(h))) + h)

The layer is the composition of five fused functions (``fused_linear_act`` twice, the
attention, ``residual_layer_norm`` twice, ``fused_mlp``: each a node of its own when they are
called one by one). Here their ``forward`` and ``backward`` run inside one node: the same
kernels in the same order, each part keeping what its own backward needs in a ``Context`` of
its own, so the layer computes what the five nodes compute. What goes is the per-node work
around the kernels: recording and checking each node, and under ``mf.autocast`` the twelve
recorded casts (the weights to the autocast dtype, the activations between the half-precision
GEMMs and the float32 LayerNorms) with their twelve backward casts. Those are about a hundred
microseconds of Python each on a GPU, where one layer's kernels take about a millisecond.

Under autocast the parts run in the precisions the separate functions would: the GEMMs, the
attention and the MLP in the autocast dtype, the LayerNorms (and the output) in float32; the
casts are plain ``astype`` inside the node. The parameters' gradients come back in their own
dtype (float32 master weights): the weight-gradient GEMMs and the bias sums write their float32
sums directly (``Context.grad_dtype``), where the separate functions round them to half
precision and a cast node widens them again; so the one node's weight gradients are a little
closer to float32 than the five nodes'. Dropout is not part of the node: layers with active dropout
call the five functions (docs/fused-training.md).

Attention is one of two parts: ``PaddedAttention`` (the batch as it is, padded keys masked) and
``PackedAttention`` (the layer's rows are the real tokens only: they are scattered into a
(B, L, 3d) block, L the longest sequence, for the attention, and its output rows gathered back).
"""
import numpy as np

from ..autograd.autocast import dtype_for
from ..autograd.function import Context, Function
from ..kernels import checks
from ..kernels.activations import NAMES
from ..kernels.weights import LayerWeights
from ..tensor import Tensor
from . import _args as A
from . import node_graphs
from .attention import FusedAttention, attention_args
from .layer_norm import ResidualLayerNorm
from .linear import SAVE, FusedLinearAct
from .mlp import FusedMLP
from .packing import _gather, _scatter

__all__ = ["fused_transformer_layer", "FusedLayer", "PaddedAttention", "PackedAttention", "packed_attention"]

_FLOAT32 = np.dtype(np.float32)
_to = A.restore                      # a in dtype (an astype, or a itself)


class PaddedAttention:
    """Attention over the (B, S, 3d) projection as it is: ``fused_attention``'s arguments."""

    def __init__(self, mask_add, has_mask, num_heads, scale):
        self.args = (mask_add, has_mask, num_heads, scale)

    def arrays(self):
        """The arrays that change from call to call (the additive mask, where there is one)."""
        return self.args[:1] if self.args[1] else ()

    def key(self):
        """What the kernels depend on besides `arrays`' values (None: no CUDA-graph replay)."""
        mask_add, has_mask, num_heads, scale = self.args
        if has_mask and not node_graphs.device_array(mask_add):
            return None
        return (type(self).__name__, has_mask and (mask_add.shape, mask_add.dtype), num_heads, type(scale), scale)

    def on(self, arrays):
        """The same attention reading ``arrays`` in place of `arrays()`."""
        return PaddedAttention(arrays[0], *self.args[1:]) if arrays else self

    def forward(self, ctx, qkv):
        return FusedAttention.forward(ctx, qkv, *self.args)

    def backward(self, ctx, g):
        return FusedAttention.backward(ctx, g)[0]


class PackedAttention(PaddedAttention):
    """Attention over packed rows (T, 3d): row t of sequence b at position j is row
    ``block[t] = b * L + j`` of the (B, L, 3d) block the attention sees (keys past each end
    masked by ``mask_add``); the block's padding rows are zeros and are not read back."""

    def __init__(self, block, batch, longest, mask_add, num_heads, scale):
        super().__init__(mask_add, True, num_heads, scale)
        self.block, self.shape = block, (batch, longest)

    def arrays(self):
        return (self.block, self.args[0])

    def key(self):
        padded = super().key()
        if padded is None or not node_graphs.device_array(self.block):
            return None
        return padded + (self.block.shape, self.block.dtype, self.shape)

    def on(self, arrays):
        return PackedAttention(arrays[0], *self.shape, arrays[1], *self.args[2:])

    def forward(self, ctx, qkv):
        K = A.kernels(qkv)
        nb, longest = self.shape
        rows = _scatter(K, qkv, self.block, nb * longest).reshape(nb, longest, qkv.shape[1])
        out = super().forward(ctx, rows)
        return _gather(K, out.reshape(nb * longest, out.shape[2]), self.block)

    def backward(self, ctx, g):
        K = A.kernels(g)
        nb, longest = self.shape
        dqkv = super().backward(ctx, _scatter(K, g, self.block, nb * longest).reshape(nb, longest, g.shape[1]))
        return _gather(K, dqkv.reshape(nb * longest, dqkv.shape[2]), self.block)


class FusedLayer(Function):
    """out = LN2(MLP(h) + h), h = LN1(attend(x Wqkv^T + bqkv) Wo^T + bo + x); one node, gradients
    for x and the twelve parameters (LayerWeights order)."""

    same_dtype = False        # under autocast: float32 weights around half-precision activations
    new_gradients = True

    @staticmethod
    def forward(ctx, x, wqkv, bqkv, wo, bo, g1, be1, w1, b1, w2, b2, g2, be2,
                attention, lower, eps, activation, save_preact, store_dtype):
        weights = (wqkv, bqkv, wo, bo, g1, be1, w1, b1, w2, b2, g2, be2)
        scalars = (lower, eps, activation, save_preact, store_dtype)
        need = ctx.needs_input_grad[:13]

        def run(x, *arrays):
            return _forward(need, x, weights, attention.on(arrays), *scalars)
        # on a GPU, from the second call of a signature on: CUDA graphs of the node (node_graphs.py)
        out, state = node_graphs.forward(_graph_key(x, weights, attention, need, scalars), run,
                                         (x,) + attention.arrays())
        ctx.save_for_backward(state)        # (freed after backward: the graphs' buffers are free again)
        ctx.meta = (x.dtype, lower, need[0])
        return out

    @staticmethod
    def backward(ctx, g):
        (state,) = ctx.saved_tensors
        return node_graphs.backward(state, lambda aux, g: _backward(*ctx.meta, aux, g), g)


def _forward(need, x, weights, attention, lower, eps, activation, save_preact, store_dtype):
    """The layer's output and what backward needs: the six parts' Contexts and the attention."""
    wqkv, bqkv, wo, bo, g1, be1, w1, b1, w2, b2, g2, be2 = weights
    up1 = any(need[:3])                       # a gradient flows into the attention's output
    up2 = up1 or any(need[3:5])               # ... into LN1's input
    up3 = up2 or need[0] or any(need[5:7])    # ... into h
    parts = [Context(FusedLinearAct, need[:3], None), Context(FusedAttention, (up1,), None),
             Context(FusedLinearAct, (up1,) + need[3:5], None),
             Context(ResidualLayerNorm, (up2, need[0]) + need[5:7], None),
             Context(FusedMLP, (up3,) + need[7:11], None),
             Context(ResidualLayerNorm, (True, up3) + need[11:13], None)]
    c_qkv, c_att, c_out, c_ln1, c_mlp, c_ln2 = parts
    for c in (c_qkv, c_out, c_mlp):     # weight gradients straight in the weights' dtype (float32 sums)
        c.grad_dtype = x.dtype
    norm = _FLOAT32 if lower != x.dtype else x.dtype    # the LayerNorms' dtype: float32 under autocast
    wqkv, bqkv, wo, bo, w1, b1, w2, b2 = (_to(w, lower) for w in (wqkv, bqkv, wo, bo, w1, b1, w2, b2))
    g1, be1, g2, be2 = (_to(w, norm) for w in (g1, be1, g2, be2))
    qkv = FusedLinearAct.forward(c_qkv, _to(x, lower), wqkv, bqkv, "none", True, store_dtype)
    context = attention.forward(c_att, qkv)
    a = FusedLinearAct.forward(c_out, context, wo, bo, "none", True, store_dtype)
    h = ResidualLayerNorm.forward(c_ln1, _to(a, norm), _to(x, norm), g1, be1, eps, store_dtype)
    f = FusedMLP.forward(c_mlp, _to(h, lower), w1, b1, w2, b2, activation, save_preact, store_dtype)
    out = ResidualLayerNorm.forward(c_ln2, _to(f, norm), h, g2, be2, eps, store_dtype)
    return out, (parts, attention)


def _backward(dtype, lower, need_x, aux, g):
    """The gradients of x and the twelve parameters (None where not wanted), from `_forward`'s aux."""
    (c_qkv, c_att, c_out, c_ln1, c_mlp, c_ln2), attention = aux
    grads = [None] * 13             # x and the twelve parameters, in forward's order
    # each part runs when a gradient is wanted from it: for one of its own inputs or below it
    df, dh, grads[11], grads[12] = ResidualLayerNorm.backward(c_ln2, g)
    if any(c_mlp.needs_input_grad):
        dh_mlp, grads[7], grads[8], grads[9], grads[10] = FusedMLP.backward(c_mlp, _to(df, lower))
        if dh_mlp is not None:
            dh = dh + dh_mlp            # (a half dh_mlp is widened inside the add)
    if any(c_ln1.needs_input_grad):
        da, grads[0], grads[5], grads[6] = ResidualLayerNorm.backward(c_ln1, dh)
        if any(c_out.needs_input_grad):
            dcontext, grads[3], grads[4] = FusedLinearAct.backward(c_out, _to(da, lower))
            if dcontext is not None:
                dx, grads[1], grads[2] = FusedLinearAct.backward(c_qkv, attention.backward(c_att, dcontext))
                if dx is not None:
                    grads[0] = grads[0] + dx
    if not need_x:
        grads[0] = None
    # each gradient in its parameter's dtype (the float32 master weights' under autocast;
    # the GEMMs wrote the weights' so already)
    return tuple(_to(gw, dtype) for gw in grads)


def _graph_key(x, weights, attention, need, scalars):
    """The node's signature for CUDA-graph replay (``node_graphs.signature``), or None."""
    part = attention.key()
    return None if part is None else node_graphs.signature("layer", x, weights, need, part, scalars)


def fused_transformer_layer(x, weights, key_mask, num_heads, eps=1e-12, activation="gelu", save="preact",
                            input_store_dtype=None, attention=None):
    """A BERT-style post-LayerNorm layer on x (B, S, d) as one fused, recorded op (``FusedLayer``).

    weights: a ``LayerWeights`` of Tensors of x's dtype and device (its layout: qkv (3d, d) and
    (3d,), out (d, d) and (d,), ln1 (d,) twice, fc1 (F, d) and (F,), fc2 (d, F) and (d,), ln2
    (d,) twice; the four linear biases may be None). key_mask (B, S), 1/True keep, 0 padding, or
    None; activation: one of the layer's ('relu', 'gelu', 'gelu_tanh', ...); save: as ``fused_mlp``. Under
    ``mf.autocast`` the GEMMs, the attention and the MLP run in the autocast dtype and the
    LayerNorms in float32 (the output is float32), as the five separate functions do.
    ``attention``: a ``PackedAttention`` when x holds packed rows (T, d) (the layers make it;
    ``key_mask`` is then None), else None.
    """
    fn = "fused_transformer_layer"
    A.tensor(fn, "x", x, min_ndim=2)
    lower = dtype_for(x) or x.dtype
    if lower not in A.dtypes(x.data):
        names = ", ".join(str(d) for d in A.dtypes(x.data))
        raise TypeError(f"{fn}: under mf.autocast('{x.device.type}', {lower}) its GEMMs run in {lower}, "
                        f"which the {x.device.type} kernels do not take ({names})")
    A.choice(fn, "activation", activation, NAMES)
    d = x.shape[-1]
    _check_weights(fn, x, weights, d)
    save_preact = A.choice(fn, "save", save, SAVE)
    eps = float(checks.eps(fn, eps))
    A.kernels(x.data).CHECKS.row_length(fn, d)
    if attention is None:
        if x.ndim != 3:
            raise ValueError(f"{fn}: 'x' must be (batch, seq, d_model), got shape {x.shape}")
        attention = PaddedAttention(*attention_args(fn, ("x", _in_dtype(x, lower)), x.shape[:2] + (3 * d,),
                                                    key_mask, num_heads))
    elif not isinstance(attention, PaddedAttention) or key_mask is not None:
        raise TypeError(f"{fn}: 'attention' must be a PackedAttention (with key_mask None) or None, "
                        f"got {type(attention).__name__}")
    return FusedLayer.apply(x, *weights, attention, lower, eps, activation, save_preact,
                            A.store_dtype(fn, input_store_dtype, lower))


def _check_weights(fn, x, weights, d):
    """The twelve parameters: Tensors of x's dtype and device, of the shapes of ``LayerWeights.layout``."""
    if not isinstance(weights, LayerWeights):
        raise TypeError(f"{fn}: 'weights' must be a LayerWeights, got {type(weights).__name__}")
    A.tensor(fn, "fc1_w", weights.fc1_w, ("x", x))                 # F comes from it
    for (name, expected, meaning), t in zip(LayerWeights.layout(d, weights.fc1_w.shape[0]), weights):
        if t is None and meaning.startswith("bias"):
            continue
        if t is None:
            raise TypeError(f"{fn}: '{name}' must be a Tensor of shape {meaning}, got None")
        A.tensor(fn, name, t, ("x", x))
        if tuple(t.shape) != expected:
            raise ValueError(f"{fn}: '{name}' has shape {tuple(t.shape)}, expected {meaning} = {expected} "
                             f"(d = x.shape[-1])")


def packed_attention(rows, block, batch, longest, keep, num_heads):
    """The ``PackedAttention`` of packed rows (T, d) (a Tensor): ``block`` (T,) their rows in the
    (batch, longest) block on rows' device, ``keep`` (batch, longest) its real positions."""
    lower = dtype_for(rows) or rows.dtype
    args = attention_args("fused_transformer_layer", ("x", _in_dtype(rows, lower)),
                          (batch, longest, 3 * rows.shape[-1]), keep, num_heads)
    return PackedAttention(block, batch, longest, args[0], num_heads, args[3])


def _in_dtype(x, dtype):
    """x, or an empty Tensor of ``dtype`` on its device: what the attention's mask and scale are
    made for (the dtype the attention runs in)."""
    return x if x.dtype == dtype else Tensor(x.data.reshape(-1)[:0].astype(dtype))
