"""MLP: the channel-mixing block of a residual network.

    plain  (relu, gelu, silu):  y = W2 act(W1 x)                 W1: C -> H
    gated  (glu, swiglu):       [a, b] = W1 x;  y = W2 (gate(a) * b)   W1: C -> 2H
with H = floor(expansion_factor * C), gate = sigmoid (glu) or SiLU (swiglu), the FIRST half of
W1's output being the gate, and dropout between the activation and W2.
"""
from __future__ import annotations

import math

from .. import fusions
from . import functional as F, fused, init
from .containers import Identity
from .dispatch import training_kernels
from .dropout import Dropout, inactive
from .linear import Linear
from .module import Module, check_input

__all__ = ["MLP"]

_PLAIN = {"relu": F.relu, "gelu": lambda x: F.gelu(x, "none"), "silu": F.silu}  # gelu: exact erf
_GATED = {"glu": F.glu, "swiglu": F.swiglu}
BACKENDS = ("auto", "unfused", "fused")


class MLP(Module):
    """Two-layer pointwise MLP on channels-last input (B, *spatial, C).

    Args:
        dim: C, the input and output width.
        activation: 'relu', 'gelu' (exact erf), 'silu', 'glu' or 'swiglu'.
        dropout: a probability (-> ``Dropout(p)``, ``Identity`` for 0) or a Module.
        expansion_factor: H = floor(expansion_factor * C).
        bias: biases in layer1 and layer2 (zero-initialised).
        backend: 'auto' (fused inference kernels when no gradient is recorded), 'unfused'
            (always taped primitives) or 'fused' (with recorded gradients: each layer is one
            fused autograd function of ``minifuse.fusions``, see ``fused_save``).
        init_method_in / init_method_out: curried initialisers, ``init_method_in(out_features)(weight)``;
            None keeps Linear's default (Kaiming uniform).
    """

    def __init__(self, dim, activation, dropout=0.0, expansion_factor=2.0, bias=False, backend="auto",
                 init_method_in=None, init_method_out=None, device=None, dtype=None):
        super().__init__()
        if activation not in _PLAIN and activation not in _GATED:
            raise ValueError(f"MLP: unknown activation {activation!r}; valid: "
                             f"{', '.join(list(_PLAIN) + list(_GATED))}")
        if backend not in BACKENDS:
            raise ValueError(f"MLP: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.dim, self.activation, self.backend = int(dim), activation, backend
        self.hidden_dim = math.floor(expansion_factor * dim)
        if self.hidden_dim < 1:
            raise ValueError(f"MLP: hidden_dim = floor({expansion_factor} * {dim}) = {self.hidden_dim}; "
                             f"it must be at least 1")
        self.is_glu_variant = activation in _GATED
        glu_factor = 2 if self.is_glu_variant else 1
        self.layer1 = Linear(dim, self.hidden_dim * glu_factor, bias, device, dtype)
        self.dropout = _dropout_module(dropout)
        self.layer2 = Linear(self.hidden_dim, dim, bias, device, dtype)
        for layer, method in ((self.layer1, init_method_in), (self.layer2, init_method_out)):
            if method is not None:
                method(layer.out_features)(layer.weight)
            if layer.bias is not None:
                init.zeros_(layer.bias)  # always zero, whatever init_method is given (as the seed)
        self._act = (_GATED if self.is_glu_variant else _PLAIN)[activation]

    def forward(self, x):
        check_input("MLP", x, self.dim, self.layer1.weight.dtype)
        l1, l2 = self.layer1, self.layer2
        if self.backend != "unfused" and inactive(self.dropout):   # inference: GEMM, bias + act (or gate), GEMM
            y = fused.mlp(x, l1.weight, l1.bias, l2.weight, l2.bias, self.activation)
            if y is not None:
                return y
        if self.backend == "fused" and training_kernels(x) is not None:
            return self._fused_training_forward(x)
        return self.layer2(self.dropout(self._act(self.layer1(x))))

    # ---- backend='fused' with recorded gradients (minifuse.fusions) ----
    fused_save = "preact"              # or 'recompute': layer1's GEMM is redone in backward, x W1^T not kept
    fused_input_store_dtype = None     # e.g. float16: the saved activations kept in half precision

    def _fused_training_forward(self, x):
        """One node on the tape (``fusions.fused_mlp``: layer2's input is recomputed in backward,
        not saved). With active dropout between the layers, two fused_linear_act nodes."""
        l1, l2, save, st = self.layer1, self.layer2, self.fused_save, self.fused_input_store_dtype
        if inactive(self.dropout):
            return fusions.fused_mlp(x, l1.weight, l1.bias, l2.weight, l2.bias, self.activation, save, st)
        h = fusions.fused_linear_act(x, l1.weight, l1.bias, self.activation, save, st)
        return fusions.fused_linear_act(self.dropout(h), l2.weight, l2.bias, "none", save, st)

    def flop_count(self, num_tokens):
        """FLOPs for ``num_tokens`` tokens, exactly the seed's formula: 1 MAC = 2 FLOPs, the
        activation 1 FLOP per hidden element, plus 1 more per element for the gate product;
        bias and dropout are not counted."""
        t = num_tokens
        act = 2 * t * self.hidden_dim if self.is_glu_variant else t * self.hidden_dim
        return (2 * t * self.layer1.in_features * self.layer1.out_features + act
                + 2 * t * self.layer2.in_features * self.layer2.out_features)

    def extra_repr(self):
        return (f"dim={self.dim}, hidden_dim={self.hidden_dim}, activation='{self.activation}', "
                f"backend='{self.backend}'")


def _dropout_module(dropout):
    if isinstance(dropout, Module):
        return dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"MLP: dropout must be a probability or a Module, got {type(dropout).__name__}")
    return Dropout(dropout) if dropout != 0 else Identity()
