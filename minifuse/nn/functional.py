"""``minifuse.nn.functional`` (import as F): the functions layers are made of.

Activations, softmax and layer norm are primitive ops (``minifuse.ops``); the rest is composed
from primitives here and differentiates through them.
"""
from __future__ import annotations

import numpy as np

from .. import functions as mf
from ..device import capturing
from ..dtypes import finfo, is_floating
from ..autograd.autocast import dtype_for
from ..kernels.activations import NAMES as TABLE_NAMES
from ..kernels.layout import head_scale
from ..ops import elementwise as E, nn as N, shape as S
from ..ops._util import check_broadcast
from ..random import generator
from ..tensor import Tensor

__all__ = ["linear", "relu", "gelu", "silu", "sigmoid", "tanh", "glu", "swiglu", "softmax",
           "log_softmax", "layer_norm", "dropout", "embedding", "cross_entropy", "mse_loss",
           "scaled_dot_product_attention", "ACTIVATIONS", "activation", "leaky_relu", "rms_norm", "nll_loss",
           "binary_cross_entropy_with_logits", "one_hot", "unfold", "conv2d", "max_pool2d"]


def _check_tensor(op, name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(x).__name__}")


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, weight of shape (out_features, in_features)."""
    _check_tensor("linear", "input", input)
    _check_tensor("linear", "weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"linear: 'weight' must be 2-D (out_features, in_features), got shape {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: 'input' last dimension must be in_features={weight.shape[1]}, got shape "
                         f"{input.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: 'bias' must have shape ({weight.shape[0]},), got {bias.shape}")
    out = input.matmul(weight.T)
    return out if bias is None else out + bias_like(out, bias)


def bias_like(out, bias):
    """``bias`` for adding to a GEMM's ``out``: under mf.autocast in the GEMM's half precision too."""
    return bias.to(out.dtype) if out.dtype != bias.dtype and dtype_for(out) == out.dtype else bias


def relu(input):
    """max(x, 0)"""
    return E.Relu.apply(input)


def gelu(input, approximate="none"):
    """GELU: x * Phi(x) with the exact erf (``approximate='none'``, PyTorch's default and BERT's),
    or the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with 'tanh'."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return E.Gelu.apply(input, approximate)


def silu(input):
    """x * sigmoid(x)"""
    return E.Silu.apply(input)


def sigmoid(input):
    return E.Sigmoid.apply(input)


def leaky_relu(input, negative_slope=0.01):
    """x where x > 0, else negative_slope * x (the slope at 0 is negative_slope, as PyTorch)."""
    _check_tensor("leaky_relu", "input", input)
    return mf.where(input > 0, input, input * negative_slope)


def tanh(input):
    return E.Tanh.apply(input)


def _halves(op, input, dim):
    _check_tensor(op, "input", input)
    n = input.shape[dim] if input.ndim else 0
    if n % 2:
        raise ValueError(f"{op}: the size of dim {dim} must be even to split in halves, got shape {input.shape}")
    return input.split([n // 2, n // 2], dim)      # sections: two halves even when n is 0


def glu(input, dim=-1):
    """Gated linear unit with the FIRST half as the gate: ``a, b = halves; sigmoid(a) * b``.

    Note: ``torch.nn.functional.glu`` gates with the second half (``a * sigmoid(b)``); minifuse
    follows the MLP seed (gate first) so that glu and swiglu share one layout."""
    a, b = _halves("glu", input, dim)
    return a.sigmoid() * b


def swiglu(input, dim=-1):
    """SwiGLU as in Megatron: ``a, b = halves; silu(a) * b`` (the first half is the gate)."""
    a, b = _halves("swiglu", input, dim)
    return silu(a) * b


ACTIVATIONS = {
    "relu": relu,
    "gelu": lambda x: gelu(x, "none"),
    "gelu_tanh": lambda x: gelu(x, "tanh"),
    "silu": silu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "glu": glu,
    "swiglu": swiglu,
    "none": lambda x: x,
}


def activation(name):
    """The activation function called ``name``: one of ``ACTIVATIONS``, or any other activation of
    the table in ``minifuse.kernels.activations`` (taped as the generic ``Activation`` op)."""
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if name in TABLE_NAMES:
        return lambda x: E.Activation.apply(x, name)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def softmax(input, dim=-1):
    """e^x / sum(e^x) along dim, computed after subtracting the max (stable)."""
    return N.Softmax.apply(input, dim)


def log_softmax(input, dim=-1):
    return N.LogSoftmax.apply(input, dim)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape``."""
    _check_tensor("layer_norm", "input", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(shape):] != shape or input.ndim < len(shape):
        raise ValueError(f"layer_norm: 'input' of shape {input.shape} does not end with normalized_shape {shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: '{name}' must have shape {shape}, got {p.shape}")
    return N.LayerNorm.apply(input, weight, bias, len(shape), eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2) + eps) * weight over the trailing ``normalized_shape``; eps defaults to
    the machine epsilon of the input's dtype (PyTorch's default)."""
    _check_tensor("rms_norm", "input", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.ndim < len(shape) or input.shape[input.ndim - len(shape):] != shape:
        raise ValueError(f"rms_norm: 'input' of shape {input.shape} does not end with normalized_shape {shape}")
    if weight is not None and weight.shape != shape:
        raise ValueError(f"rms_norm: 'weight' must have shape {shape}, got {weight.shape}")
    eps = float(finfo(input.dtype).eps) if eps is None else float(eps)
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    out = input / ((input * input).mean(dims, keepdim=True) + eps).sqrt()
    return out if weight is None else out * weight


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (mask drawn from the
    global generator, so ``mf.manual_seed`` makes it repeatable)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = generator().random(input.shape) >= p
    mask = (keep / (1.0 - p)).astype(input.dtype)
    return input * Tensor(mask).to(input.device)


def embedding(input, weight):
    """Rows of ``weight`` (num_embeddings, dim) picked by the integer tensor ``input``."""
    _check_tensor("embedding", "input", input)
    if is_floating(input.dtype) or input.dtype == np.bool_:
        raise TypeError(f"embedding: 'input' must be an integer tensor of indices, got {input.dtype}")
    # The range check reads two values back to the host; inside a CUDA-graph capture that is
    # illegal, and whoever captures checks the indices before each replay (SentenceEncoder does).
    if input.numel() and not capturing(input.data):
        lo, hi = int(input.data.min()), int(input.data.max())
        if lo < 0 or hi >= weight.shape[0]:
            raise IndexError(f"embedding: index out of range: 'input' holds values in [{lo}, {hi}] but "
                             f"'weight' has {weight.shape[0]} rows")
    return S.IndexSelect.apply(weight, input)        # checked above: not again through weight[input]


def cross_entropy(input, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (N, C) or (N, C, d1, ...) against class indices ``target``
    (N) or (N, d1, ...): ``-(1-s) log p[target] - s mean_c log p[c]`` per element, averaged
    over the targets that are not ``ignore_index``."""
    return _class_loss("cross_entropy", input, target, ignore_index, reduction, label_smoothing, log_softmax)


def nll_loss(input, target, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (N, C) or (N, C, d1, ...) (e.g. from
    ``log_softmax``) at class indices ``target``: ``-input[target]``, averaged over the targets
    that are not ``ignore_index``. ``cross_entropy(x, t) == nll_loss(log_softmax(x, 1), t)``."""
    return _class_loss("nll_loss", input, target, ignore_index, reduction, 0.0, lambda x, dim: x)


def _class_loss(op, input, target, ignore_index, reduction, label_smoothing, to_log_probs):
    """The loss of cross_entropy and nll_loss on the log-probabilities ``to_log_probs(input, -1)``."""
    _check_tensor(op, "input", input)
    _check_tensor(op, "target", target)
    if is_floating(target.dtype):
        raise TypeError(f"{op}: 'target' must hold integer class indices (probability "
                        f"targets are not supported), got {target.dtype}")
    if input.ndim < 1 or input.ndim == 1 and target.ndim != 0 or input.ndim > 1 and \
            target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(f"{op}: 'target' shape {target.shape} does not match 'input' shape "
                         f"{input.shape} (expected {input.shape[:1] + input.shape[2:]})")
    _check_reduction(op, reduction)
    if input.ndim == 1:
        input, target = input.unsqueeze(0), target.reshape(1)
    num_classes = input.shape[1]
    if input.ndim > 2:  # move the class dim last and flatten the rest
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        out_shape = target.shape
        input = input.permute(perm).reshape(-1, num_classes)
        target = target.reshape(-1)
    else:
        out_shape = target.shape
    t = target.data
    valid = t != ignore_index
    if valid.any() and (t[valid].min() < 0 or t[valid].max() >= num_classes):
        raise IndexError(f"{op}: 'target' holds class indices outside [0, {num_classes})")
    xp = input.xp
    safe_t = xp.where(valid, t, 0)
    logp = to_log_probs(input, dim=-1)
    picked = logp[xp.arange(logp.shape[0]), safe_t]
    loss = -picked
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(dim=-1)
    weight = Tensor(valid.astype(input.dtype))
    loss = loss * weight
    if reduction == "none":
        return loss.reshape(out_shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(int(valid.sum()), 1) if valid.any() else loss.sum() * float("nan")


def _check_reduction(op, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss, reduction):
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross-entropy of logits x against targets y in [0, 1], computed stably in one op:
    ``-w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]``, p = ``pos_weight`` (broadcast along
    the last dim: one per class), w = ``weight`` (broadcast to the input)."""
    op = "binary_cross_entropy_with_logits"
    _check_tensor(op, "input", input)
    _check_tensor(op, "target", target)
    if target.shape != input.shape:
        raise ValueError(f"{op}: 'target' shape {target.shape} must equal 'input' shape {input.shape}")
    _check_reduction(op, reduction)
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None:
            _check_tensor(op, name, t)
            if check_broadcast(op, t.shape, input.shape, (name, "input")) != input.shape:
                raise ValueError(f"{op}: '{name}' of shape {t.shape} must broadcast to 'input' shape {input.shape}")
    loss = N.BinaryCrossEntropyWithLogits.apply(input, target, pos_weight)
    return _reduce(loss if weight is None else loss * weight, reduction)


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape (*tensor.shape, num_classes): 1 at each index of ``tensor``, else 0.
    ``num_classes=-1`` takes max(tensor) + 1."""
    _check_tensor("one_hot", "tensor", tensor)
    if is_floating(tensor.dtype) or tensor.dtype == np.bool_:
        raise TypeError(f"one_hot: 'tensor' must hold integer class indices, got {tensor.dtype}")
    t = tensor.data
    lo, hi = (int(t.min()), int(t.max())) if t.size else (0, -1)
    if num_classes == -1:
        num_classes = hi + 1
    if lo < 0 or hi >= num_classes:
        raise IndexError(f"one_hot: 'tensor' holds values in [{lo}, {hi}], outside [0, num_classes={num_classes})")
    return Tensor((t[..., None] == tensor.xp.arange(num_classes)).astype(np.int64))


def mse_loss(input, target, reduction="mean"):
    """mean((input - target)^2)"""
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: 'input' shape {input.shape} and 'target' shape {target.shape} differ")
    _check_reduction("mse_loss", reduction)
    d = input - target
    return _reduce(d * d, reduction)


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v over the last two dims, scale = 1/sqrt(head_dim) by default.

    ``attn_mask`` as in PyTorch: a bool mask (True = may attend) or a float mask added to the
    scores; it broadcasts to (..., L, S). ``is_causal`` masks keys after the query position."""
    for n, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor("scaled_dot_product_attention", n, t)
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: shapes do not fit: query {query.shape}, key "
                         f"{key.shape}, value {value.shape} (need query[-1] == key[-1], key[-2] == value[-2])")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    scale = head_scale(query.shape[-1]) if scale is None else scale
    scores = query.matmul(key.transpose(-2, -1)) * scale
    L, S = query.shape[-2], key.shape[-2]
    if is_causal:
        attn_mask = Tensor(np.tril(np.ones((L, S), dtype=bool))).to(query.device)
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            attn_mask = Tensor(attn_mask)
        if attn_mask.dtype == np.bool_:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return softmax(scores, dim=-1).matmul(value)


from ._conv import conv2d, max_pool2d, unfold  # noqa: E402  (built on the functions above)
