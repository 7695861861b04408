"""Graph backends: which fused ops a backend implements, and how it runs them.

A fused node's implementation takes the kernel package, the node and its input arrays and
returns the output array. The implementations are written once, over the entry points that every
kernel package has (``minifuse.kernels.registry``), so each kernel backend ('cpu', 'cuda', and any
registered later) is a graph backend of the same name with all of them. A backend that lacks a
fused op gets it expanded back into primitives by the Unfuse pass.
"""
from __future__ import annotations

from ..kernels import registry
from ..kernels.weights import LayerWeights


class Backend:
    """``impls``: {fused op name: impl(kernels, node, *arrays)}; ``kernels``: the kernel package
    they run on, or the name of a kernel backend of the registry (default 'cpu')."""

    def __init__(self, name, impls, kernels="cpu"):
        self.name = name
        self.impls = impls
        self._kernels = kernels

    @property
    def kernels(self):
        if isinstance(self._kernels, str):
            self._kernels = registry.get(self._kernels).kernels
        return self._kernels

    @property
    def fused_ops(self):
        return set(self.impls)

    def run(self, node, arrays):
        return self.impls[node.op](self.kernels, node, *arrays)

    def __repr__(self):
        return f"Backend({self.name!r}, fused_ops={sorted(self.impls)})"


def _vector(K, b, size):
    """A rank <= 1 bias as a contiguous (size,) vector (a scalar bias is broadcast)."""
    return None if b is None else K.xp.ascontiguousarray(K.xp.broadcast_to(b, (size,)))


def _linear(K, x, w, b, activation, layout):
    if layout == "out_in":
        return K.linear_act(x, w, _vector(K, b, w.shape[0]), activation)
    y = K.xp.matmul(x, w)  # (in, out) weight: the GEMM as it is, then the same fused epilogue
    K.bias_act_(y.reshape(-1, y.shape[-1]), _vector(K, b, w.shape[1]), activation)
    return y


def _matmul_bias_act(K, node, x, w, b=None):
    return _linear(K, x, w, b, node.attrs["activation"], node.attrs["layout"])


def _bias_swiglu(K, node, x, w, b=None):
    y = _linear(K, x, w, None, "none", node.attrs["layout"])
    return K.bias_glu(y, _vector(K, b, y.shape[-1]), node.attrs["gate"])


def _residual_ln(K, node, x, residual, gamma, beta):
    return K.residual_layer_norm(x, residual, gamma, beta, node.attrs["eps"])


def _attention_block(K, node, x, qkv_w, out_w, *rest):
    a = node.attrs
    qkv_b, out_b = (rest[0], rest[1]) if a["has_bias"] else (None, None)
    mask = rest[-1] if a["has_mask"] else None
    qkv = K.linear_act(x, qkv_w, qkv_b, "none")
    context = K.attention_packed(qkv, mask, a["num_heads"], a["scale"], method=a["method"])
    return K.linear_act(context, out_w, out_b, "none")


def _transformer_layer(K, node, x, *inputs):
    a = node.attrs
    mask = inputs[12] if a["has_mask"] else None
    return K.transformer_layer(x, LayerWeights(*inputs[:12]), mask, a["num_heads"], a["eps"], a["activation"],
                               a["method"])


IMPLS = {
    "FusedMatMulBiasAct": _matmul_bias_act,
    "FusedBiasSwiGLU": _bias_swiglu,
    "FusedResidualLN": _residual_ln,
    "FusedAttentionBlock": _attention_block,
    "FusedTransformerLayer": _transformer_layer,
}

# Implements no fused op: every fusion is expanded back, so it runs the primitives. Useful to
# check that un-fusing is exact and to compare.
REFERENCE = Backend("reference", {})

_BACKENDS = {"reference": REFERENCE}


def register_backend(backend):
    _BACKENDS[backend.name] = backend


def get_backend(name):
    """A graph backend by name: 'reference', one registered here, or a kernel backend of the
    registry ('cpu', 'cuda'), which runs every fused op on its kernel package."""
    if isinstance(name, Backend):
        return name
    found = _BACKENDS.get(name)
    if found is not None:
        return found
    if name in registry.names():
        kernels = registry.get(name).kernels
        if kernels is None:
            raise RuntimeError(f"graph backend {name!r}: its kernels cannot be imported here "
                               f"({registry.get(name).package}; for 'cuda': pip install 'minifuse[cuda]')")
        backend = _BACKENDS[name] = Backend(name, IMPLS, kernels)
        return backend
    known = sorted(set(_BACKENDS) | set(registry.names()))
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(known)}")
