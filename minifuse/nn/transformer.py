"""BERT's post-LayerNorm transformer layer and a stack of them.

    h   = LN1(x + Dropout(Attn(x, mask)))
    out = LN2(h + Dropout(fc2(act(fc1(h)))))        act = GELU with the exact erf by default
Submodule names (attn.qkv, attn.out, ln1, fc1, fc2, ln2) are what the BERT loader and the graph
fusion pass map onto: keep them.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import fusions
from ..fusions import packing as FU
from ..kernels import checks, packing as kernel_packing
from ..kernels.activations import NAMES
from ..kernels.weights import LayerWeights
from . import functional as F, fused
from .attention import MultiHeadAttention, _mask_array, zero_padding
from .containers import ModuleList
from .dispatch import packed_mask, packing as packing_switch, packing_enabled, training_kernels, use_fused
from .dropout import Dropout, inactive
from .linear import Linear
from .module import Module, check_input
from .normalization import LayerNorm

__all__ = ["TransformerLayer", "TransformerEncoder"]

_ACTIVATIONS = tuple(n for n in NAMES if n != "none")   # the activation table's (kernels/activations.py)


class TransformerLayer(Module):
    """One encoder layer. x: (B, S, d_model); attention_mask: (B, S), bool or numbers 0/1 (1 =
    keep, 0 = padding; other values are an error). The output at padded positions is zeros.

    Fused inference with a padded mask runs packed (docs/packing.md): the real tokens only, and
    attention per sequence over its own tokens, when ``mf.nn.packing_enabled()`` and the fraction
    of padded positions is above ``mf.nn.packing_threshold()`` (default 0); the real tokens'
    outputs are those of the padded computation.

    ``fused_training=True``: with recorded gradients the QKV and output projections, the
    attention (unless its dropout is active), the residual adds + LayerNorms and fc1/fc2 with
    bias and activation run as fused autograd functions (``minifuse.fusions``).
    """

    def __init__(self, d_model, num_heads, intermediate_size, activation="gelu", layer_norm_eps=1e-12,
                 dropout=0.0, bias=True, device=None, dtype=None, fused_training=False):
        super().__init__()
        self.fused_training = bool(fused_training)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerLayer: unknown activation {activation!r}; valid: "
                             f"{', '.join(_ACTIVATIONS)} ('gelu' is the exact erf form, as BERT)")
        self.activation = activation
        checks.eps("TransformerLayer", layer_norm_eps, "layer_norm_eps")
        self.attn = MultiHeadAttention(d_model, num_heads, bias, dropout, device, dtype)
        self.ln1 = LayerNorm(d_model, eps=layer_norm_eps, device=device, dtype=dtype)
        self.fc1 = Linear(d_model, intermediate_size, bias, device, dtype)
        self.fc2 = Linear(intermediate_size, d_model, bias, device, dtype)
        self.ln2 = LayerNorm(d_model, eps=layer_norm_eps, device=device, dtype=dtype)
        self.dropout = Dropout(dropout)
        self._act = F.activation(activation)

    def forward(self, x, attention_mask=None):
        check_input("TransformerLayer", x, self.attn.d_model, self.fc1.weight.dtype, name="x")
        if x.ndim != 3:
            raise ValueError(f"TransformerLayer: argument 'x' must be (batch, seq, d_model), got shape {x.shape}")
        mask = _mask_array(attention_mask, *x.shape[:2], "TransformerLayer")    # checked here on every path
        weights = self.weights()
        if self._fusable(x) and use_fused(x, *weights):   # inference: the whole layer in one call of fused kernels
            y = fused.transformer_layers(x, [self], mask, weights=[weights])
            if y is None:
                y = fused.transformer_layer(x, weights, mask, self.attn.num_heads, self.ln1.eps, self.activation)
            if y is not None:
                return y
        if self.fused_training and training_kernels(x) is not None:
            packed = _packed_training([self], x, attention_mask)
            if packed is not None:
                return packed
            return zero_padding(self._fused_training_forward(x, attention_mask, mask, weights), attention_mask,
                                "TransformerLayer")
        h = self.ln1(x + self.dropout(self.attn._forward(x, attention_mask)))
        y = self.ln2(h + self.dropout(self.fc2(self._act(self.fc1(h)))))
        return zero_padding(y, attention_mask, "TransformerLayer")

    # ---- fused_training=True with recorded gradients (minifuse.fusions) ----
    fused_save = "preact"              # or 'recompute': fc1's GEMM is redone in backward, only its input kept
    fused_input_store_dtype = None     # e.g. float16: the saved activations kept in half precision

    def _fused_training_forward(self, x, attention_mask, mask, weights):
        """The layer as one fused node (``fusions.fused_transformer_layer``) when nothing in it is
        random; with active dropout, the QKV projection, attention, output projection, residual +
        LN1, the MLP (fc1 + bias + activation + fc2 + bias), residual + LN2 as one fused node each
        (with active attention dropout the attention is the taped module: the fused one has no
        dropout on the probabilities). ``mask``: attention_mask as a checked array."""
        a = self.attn
        if self._one_node():
            return fusions.fused_transformer_layer(x, weights, mask, a.num_heads, self.ln1.eps, self.activation,
                                                   self.fused_save, self.fused_input_store_dtype)
        if inactive(a.dropout):
            return self._fused_rows(x, lambda qkv: fusions.fused_attention(qkv, mask, a.num_heads))
        return self._fused_rows(x, None, a._forward(x, attention_mask))

    def _fused_rows(self, x, attend, attended=None):
        """The layer's fused functions on x (..., d): the QKV projection, ``attend(qkv)`` (the
        context), the output projection (or ``attended``, the attention block's output, given),
        residual + LN1, the MLP, residual + LN2."""
        st = self.fused_input_store_dtype
        a = self.attn
        if attended is None:
            qkv = fusions.fused_linear_act(x, a.qkv.weight, a.qkv.bias, "none", "preact", st)
            attended = fusions.fused_linear_act(attend(qkv), a.out.weight, a.out.bias, "none", "preact", st)
        h = fusions.residual_layer_norm(self.dropout(attended), x, self.ln1.weight, self.ln1.bias, self.ln1.eps, st)
        f = fusions.fused_mlp(h, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self.activation,
                              self.fused_save, st)
        return fusions.residual_layer_norm(self.dropout(f), h, self.ln2.weight, self.ln2.bias, self.ln2.eps, st)

    def weights(self):
        """The layer's parameters as a LayerWeights record (the order every fused path uses)."""
        a = self.attn
        return LayerWeights(a.qkv.weight, a.qkv.bias, a.out.weight, a.out.bias, self.ln1.weight, self.ln1.bias,
                            self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self.ln2.weight,
                            self.ln2.bias)

    def _fusable(self, x):
        """The whole-layer kernel computes this layer's function for x: no active dropout, one
        LayerNorm eps, x (B, S, d_model)."""
        return self._one_node() and x.ndim == 3 and x.shape[-1] == self.attn.d_model

    def _one_node(self):
        """The layer is one function of its input and weights: no active dropout, one LayerNorm eps
        (what the whole-layer kernels and ``fused_transformer_layer`` compute)."""
        return inactive(self.dropout) and inactive(self.attn.dropout) and self.ln1.eps == self.ln2.eps

    def extra_repr(self):
        return f"activation='{self.activation}'"


def _packed_training(layers, x, attention_mask):
    """The fused training of ``layers`` (TransformerLayers, in order) on the real tokens, when the
    batch packs (the rule of ``nn.dispatch.packed_mask``, as in inference); else None. The T real
    rows are gathered once and every layer's fused functions run on them (``_fused_rows``);
    attention runs on the rows scattered into a (B, L, 3d) block, L the longest sequence, keys past
    each end masked; the last output rows are scattered back to (B, S, d), zeros at the padding.
    Each move is a recorded op whose backward moves the gradient back (``fusions.packing``)."""
    if x.ndim != 3 or not all(inactive(layer.attn.dropout) for layer in layers):
        return None
    host = packed_mask(x.data, _mask_array(attention_mask, *x.shape[:2], "TransformerLayer"))
    if host is None:
        return None
    nb, s, d = x.shape
    cu, index = kernel_packing.offsets(host)
    lengths = np.diff(cu)
    longest = int(lengths.max(initial=0))
    # packed row t of sequence b, position j, is row b * L + j of the (B, L) attention block
    block = np.repeat(np.arange(nb) * longest - cu[:-1], lengths) + np.arange(int(cu[-1]))
    keep = np.arange(longest)[None, :] < lengths[:, None]                     # (B, L)
    index, block = (FU.device_index(i, x.data) for i in (index, block))

    def attention(num_heads):
        def attend(qkv):
            qkv_block = FU.ScatterRows.apply(qkv, block, nb * longest).reshape(nb, longest, 3 * d)
            return FU.GatherRows.apply(fusions.fused_attention(qkv_block, keep, num_heads), block)
        return attend
    rows = FU.GatherRows.apply(x, index)                                       # (T, d)
    for layer in layers:
        if layer._one_node():
            packed = fusions.packed_attention(rows, block, nb, longest, keep, layer.attn.num_heads)
            rows = fusions.fused_transformer_layer(rows, layer.weights(), None, layer.attn.num_heads, layer.ln1.eps,
                                                   layer.activation, layer.fused_save, layer.fused_input_store_dtype,
                                                   attention=packed)
        else:
            rows = layer._fused_rows(rows, attention(layer.attn.num_heads))
    return FU.ScatterRows.apply(rows, index, nb * s).reshape(nb, s, d)


class TransformerEncoder(Module):
    """``num_layers`` layers applied in order (``layers``, a ModuleList).

    ``layer`` is one of: a factory called once per layer (``lambda: TransformerLayer(...)``), a dict of
    TransformerLayer arguments, or a TransformerLayer to copy (as PyTorch; the copies start from
    the same weights).

    With a padded attention_mask, fused inference packs the real tokens once, runs every layer on
    them and restores the padding once at the end (zeros at padded positions), under the rule of
    TransformerLayer; ``enable_nested_tensor=False`` (PyTorch's name) keeps this stack padded.
    """

    def __init__(self, layer, num_layers, enable_nested_tensor=True):
        super().__init__()
        if isinstance(layer, dict):
            make = lambda: TransformerLayer(**layer)  # noqa: E731
        elif isinstance(layer, Module):
            make = lambda: copy.deepcopy(layer)  # noqa: E731
        elif callable(layer):
            make = layer
        else:
            raise TypeError(f"TransformerEncoder: 'layer' must be a factory, a dict of TransformerLayer "
                            f"arguments or a Module, got {type(layer).__name__}")
        self.layers = ModuleList(make() for _ in range(num_layers))
        self.enable_nested_tensor = bool(enable_nested_tensor)

    def forward(self, x, attention_mask=None):
        check_input("TransformerEncoder", x, name="x")
        return self.run(x, attention_mask)

    def run(self, x, attention_mask=None, all_outputs=False):
        """The last layer's output, or with all_outputs [x, the output of each layer] (the hidden
        states, each (B, S, d_model))."""
        layers = list(self.layers)
        nested = getattr(self, "enable_nested_tensor", True)     # encoders pickled before the switch existed
        if (nested and layers and attention_mask is not None
                and all(isinstance(t, TransformerLayer) and t._fusable(x) for t in layers)):
            y = fused.transformer_layers(x, layers, _mask_array(attention_mask, *x.shape[:2], "TransformerEncoder"),
                                         all_outputs)
            if y is not None:
                return y
        decided = False
        if (nested and layers and not all_outputs and attention_mask is not None
                and all(isinstance(t, TransformerLayer) and t.fused_training for t in layers)
                and training_kernels(x) is not None):
            for layer in layers:
                check_input("TransformerLayer", x, layer.attn.d_model, layer.fc1.weight.dtype, name="x")
            y = _packed_training(layers, x, attention_mask)         # packed once for the stack
            if y is not None:
                return y
            decided = True      # this batch is not packed: the layers need not read the mask again
        outputs = [x]
        with packing_switch(packing_enabled() and nested and not decided):
            for layer in layers:
                outputs.append(layer(outputs[-1], attention_mask))
        return outputs if all_outputs else outputs[-1]
