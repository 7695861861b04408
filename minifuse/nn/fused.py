"""The fused ops the layers call: each picks its kernel package once (``dispatch.fused_kernels``:
fusion on, no gradient recorded, a backend for the input's arrays that takes its dtype) and runs
one fused kernel entry point, or returns None, and the layer computes its formula with the taped
ops instead. Outputs are Tensors without history (fused inference never records).
"""
from __future__ import annotations

from ..kernels.layout import head_scale
from ..kernels.weights import LayerWeights
from .dispatch import attention_method, fused_kernels, packed_attention_method, packed_mask

__all__ = ["linear", "mlp", "layer_norm", "attention", "transformer_layer", "transformer_layers", "packed",
           "attention_block"]


def _data(t):
    return None if t is None else t.data


def _wrap(array):
    from ..tensor import Tensor
    return Tensor._from_op(array, None, 0)


def linear(x, weight, bias, activation):
    """act(x W^T + b) (activation a table name), or None."""
    k = fused_kernels(x, (weight, bias))
    return None if k is None else _wrap(k.linear_act(x.data, weight.data, _data(bias), activation))


def mlp(x, w1, b1, w2, b2, activation):
    """act(x W1^T + b1) W2^T + b2 (gated glu / swiglu included), or None."""
    k = fused_kernels(x, (w1, b1, w2, b2))
    if k is None:
        return None
    return _wrap(k.mlp(x.data, w1.data, _data(b1), w2.data, _data(b2), activation))


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last dim, or None."""
    k = fused_kernels(x, (weight, bias))
    return None if k is None else _wrap(k.residual_layer_norm(x.data, None, weight.data, bias.data, eps))


def packed(k, x, key_mask):
    """(rows (T, d), Packing) of the real tokens of array x when the batch runs packed
    (`packed_mask`), else None."""
    host = packed_mask(x, key_mask)
    return None if host is None else k.pack(x, host)


def attention_block(k, x, qkv_w, qkv_b, out_w, out_b, key_mask, num_heads, scale, method):
    """On arrays: out(attention(qkv(x), key_mask)) with zeros at padded positions, packed when
    the batch packs (the projections and attention on real tokens only). Eager layers and the
    graph's FusedAttentionBlock call this."""
    p = packed(k, x, key_mask)
    if p is not None:
        rows, pk = p
        projected = k.linear_act(rows, qkv_w, qkv_b, "none")
        method = packed_attention_method(x.shape[-1] // num_heads, method, x.shape[0])
        context = k.attend_varlen(projected, pk, num_heads, scale, method, k.xp.empty(rows.shape, rows.dtype))
        return k.unpack(k.linear_act(context, out_w, out_b, "none"), pk)
    b, s = x.shape[:2]
    context = k.attention_packed(k.linear_act(x, qkv_w, qkv_b, "none"), key_mask, num_heads, scale, method=method)
    y = k.linear_act(context, out_w, out_b, "none")
    if key_mask is not None:
        keep = k.mask_add("attention", key_mask, b, s, ("x", x)) == 0
        k.xp.multiply(y, keep.astype(y.dtype)[:, :, None], out=y)
    return y


def attention(x, qkv, out, key_mask, num_heads):
    """Multi-head self-attention through the packed projection ``qkv`` and ``out`` (Linear
    layers), key_mask (B, S) array or None; or None. Zeros at padded positions (`attention_block`)."""
    k = fused_kernels(x, (qkv.weight, qkv.bias, out.weight, out.bias))
    if k is None:
        return None
    b, s, d = x.shape
    return _wrap(attention_block(k, x.data, qkv.weight.data, _data(qkv.bias), out.weight.data, _data(out.bias),
                                 key_mask, num_heads, head_scale(d // num_heads), attention_method(b, s)))


def transformer_layer(x, weights, key_mask, num_heads, eps, activation):
    """The BERT post-LN layer, ``weights`` a LayerWeights of Tensors, key_mask (B, S) or None; or None."""
    k = fused_kernels(x, weights)
    if k is None:
        return None
    return _wrap(k.transformer_layer(x.data, LayerWeights(*map(_data, weights)), key_mask, num_heads, eps,
                                     activation, attention_method(*x.shape[:2])))


def transformer_layers(x, layers, key_mask, all_outputs=False, weights=None):
    """x through ``layers`` (TransformerLayers whose whole-layer kernel computes them) packed: the
    real tokens gathered once, every layer on them, scattered back once (zeros at padding). With
    all_outputs, [x, every layer's output] (each unpacked), else the last output. None when the
    batch does not pack (`_packed`) or fused inference does not apply: take the padded path.
    ``weights``: the layers' ``weights()``, when the caller has them."""
    weights = [layer.weights() for layer in layers] if weights is None else weights
    k = fused_kernels(x, [w for ws in weights for w in ws])
    p = None if k is None else packed(k, x.data, key_mask)
    if p is None:
        return None
    rows, pk = p
    method = attention_method(*x.shape[:2])
    outputs = [x]
    for layer, w in zip(layers, weights):
        heads = layer.attn.num_heads
        rows = k.transformer_layer_varlen(rows, pk, LayerWeights(*map(_data, w)), heads, layer.ln1.eps,
                                          layer.activation, packed_attention_method(x.shape[-1] // heads, method, x.shape[0]))
        if all_outputs:
            outputs.append(_wrap(k.unpack(rows, pk)))
    return outputs if all_outputs else _wrap(k.unpack(rows, pk))
