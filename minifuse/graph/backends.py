"""Backends: which fused ops each implements, and how it runs them.

A fused node's implementation takes the node and its input arrays and returns the output array.
A backend that lacks a fused op gets it expanded back into primitives by the Unfuse pass.
"""
from __future__ import annotations

import numpy as np


class Backend:
    def __init__(self, name, impls):
        self.name = name
        self.impls = impls

    @property
    def fused_ops(self):
        return set(self.impls)

    def __repr__(self):
        return f"Backend({self.name!r}, fused_ops={sorted(self.impls)})"


def _vector(b, size):
    """A rank <= 1 bias as a contiguous (size,) vector (a scalar bias is broadcast)."""
    return np.ascontiguousarray(np.broadcast_to(b, (size,)))


def _cpu_linear(x, w, b, activation, layout):
    from ..kernels import cpu
    if layout == "out_in":
        return cpu.linear_act(x, w, None if b is None else _vector(b, w.shape[0]), activation)
    y = np.matmul(x, w)  # (in, out) weight: the GEMM as it is, then the same fused epilogue
    y2 = y.reshape(-1, y.shape[-1])
    cpu.bias_act_(y2, None if b is None else _vector(b, w.shape[1]), activation)
    return y


def _cpu_matmul_bias_act(node, x, w, b=None):
    return _cpu_linear(x, w, b, node.attrs["activation"], node.attrs["layout"])


def _cpu_bias_swiglu(node, x, w, b=None):
    from ..kernels import cpu
    y = _cpu_linear(x, w, None, "none", node.attrs["layout"])
    return cpu.bias_glu(y, None if b is None else _vector(b, y.shape[-1]), node.attrs["gate"])


def _cpu_residual_ln(node, x, residual, gamma, beta):
    from ..kernels import cpu
    return cpu.residual_layer_norm(x, residual, gamma, beta, node.attrs["eps"])


def _cpu_attention_block(node, x, qkv_w, out_w, *rest):
    from ..kernels import cpu
    a = node.attrs
    qkv_b, out_b = (rest[0], rest[1]) if a["has_bias"] else (None, None)
    mask = rest[-1] if a["has_mask"] else None
    qkv = cpu.linear_act(x, qkv_w, qkv_b, "none")
    context = cpu.attention_packed(qkv, mask, a["num_heads"], a["scale"], method=a["method"])
    return cpu.linear_act(context, out_w, out_b, "none")


def _cpu_transformer_layer(node, x, *weights):
    from ..kernels import cpu
    a = node.attrs
    mask = weights[12] if a["has_mask"] else None
    return cpu.transformer_layer(x, *weights[:12], mask, a["num_heads"], a["eps"], a["activation"], a["method"])


CPU = Backend("cpu", {
    "FusedMatMulBiasAct": _cpu_matmul_bias_act,
    "FusedBiasSwiGLU": _cpu_bias_swiglu,
    "FusedResidualLN": _cpu_residual_ln,
    "FusedAttentionBlock": _cpu_attention_block,
    "FusedTransformerLayer": _cpu_transformer_layer,
})

# Implements no fused op: every fusion is expanded back, so it runs the primitives. Useful to
# check that un-fusing is exact and to compare.
REFERENCE = Backend("reference", {})

_BACKENDS = {"cpu": CPU, "reference": REFERENCE}


def register_backend(backend):
    _BACKENDS[backend.name] = backend


def get_backend(name):
    if isinstance(name, Backend):
        return name
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(_BACKENDS))}") from None
