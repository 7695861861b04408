"""The fused ops the layers call: each picks its kernel package once (``dispatch.fused_kernels``:
fusion on, no gradient recorded, a backend for the input's arrays that takes its dtype) and runs
one fused kernel entry point, or returns None, and the layer computes its formula with the taped
ops instead. Outputs are Tensors without history (fused inference never records).
"""
from __future__ import annotations

from ..kernels.layout import head_scale
from ..kernels.weights import LayerWeights
from .dispatch import attention_method, fused_kernels

__all__ = ["linear", "mlp", "layer_norm", "attention", "transformer_layer"]


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


def attention(x, qkv, out, key_mask, num_heads):
    """Multi-head self-attention through the packed projection ``qkv`` and ``out`` (Linear
    layers), key_mask (B, S) array or None; or None."""
    k = fused_kernels(x, (qkv.weight, qkv.bias, out.weight, out.bias))
    if k is None:
        return None
    b, s, d = x.shape
    packed = k.linear_act(x.data, qkv.weight.data, _data(qkv.bias), "none")
    context = k.attention_packed(packed, key_mask, num_heads, head_scale(d // num_heads),
                                 method=attention_method(b, s))
    return _wrap(k.linear_act(context, out.weight.data, _data(out.bias), "none"))


def transformer_layer(x, weights, key_mask, num_heads, eps, activation):
    """The BERT post-LN layer, ``weights`` a LayerWeights of Tensors, key_mask (B, S) or None; or None."""
    k = fused_kernels(x, weights)
    if k is None:
        return None
    return _wrap(k.transformer_layer(x.data, LayerWeights(*map(_data, weights)), key_mask, num_heads, eps,
                                     activation, attention_method(*x.shape[:2])))
