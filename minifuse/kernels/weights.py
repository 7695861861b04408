"""The weights of one BERT post-LN transformer layer, in one record.

The layer (``nn.TransformerLayer``), both kernel backends, the argument validation and the graph's
``FusedTransformerLayer`` node all pass these twelve arrays (or tensors) as one ``LayerWeights``,
so their order is written here only. Biases (``*_b`` after a weight) may be None; the LayerNorm
parameters may not.

    qkv = x @ qkv_w.T + qkv_b                 qkv_w (3d, d), rows [Q; K; V]
    h   = LayerNorm(x + ctx @ out_w.T + out_b; ln1_g, ln1_b)       out_w (d, d)
    out = LayerNorm(h + act(h @ fc1_w.T + fc1_b) @ fc2_w.T + fc2_b; ln2_g, ln2_b)
                                              fc1_w (F, d), fc2_w (d, F)
"""
import functools
from typing import Any, NamedTuple


class LayerWeights(NamedTuple):
    qkv_w: Any
    qkv_b: Any
    out_w: Any
    out_b: Any
    ln1_g: Any
    ln1_b: Any
    fc1_w: Any
    fc1_b: Any
    fc2_w: Any
    fc2_b: Any
    ln2_g: Any
    ln2_b: Any

    def map(self, fn):
        """The record with ``fn`` applied to every entry that is not None (e.g. ``.data``)."""
        return LayerWeights(*(None if a is None else fn(a) for a in self))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def layout(d, f):
        """((name, expected shape, the shape as an error message spells it), ...) in the record's
        order, for width d and FFN width f (cached: validation reads it on every call)."""
        return (("qkv_w", (3 * d, d), "(3d, d)"), ("qkv_b", (3 * d,), "bias (3d,)"),
                ("out_w", (d, d), "(d, d)"), ("out_b", (d,), "bias (d,)"),
                ("ln1_g", (d,), "(d,)"), ("ln1_b", (d,), "(d,)"),
                ("fc1_w", (f, d), "(F, d)"), ("fc1_b", (f,), "bias (F,)"),
                ("fc2_w", (d, f), "(d, F)"), ("fc2_b", (d,), "bias (d,)"),
                ("ln2_g", (d,), "(d,)"), ("ln2_b", (d,), "(d,)"))
