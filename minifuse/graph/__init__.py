"""Graph capture and fusion across layers: trace a model, rewrite patterns into fused nodes,
un-fuse what a backend lacks, execute.

    g = mf.graph.trace(model, x, mask)          # primitive ops, recorded by the op layer
    g = mf.graph.fuse(g, backend="cpu")         # FusedMatMulBiasAct, ..., FusedTransformerLayer
    y = mf.graph.execute(g, [x, mask])
    fast = mf.compile(model, x, mask)           # all of the above, cached per input shape
"""
from __future__ import annotations

import os

from .backends import Backend, get_backend, register_backend
from .executor import execute
from .ir import Graph, Node
from .passes import (DeadCodeElimination, FuseAttentionBlock, FuseBiasSwiGLU, FuseMatMulBiasAct,
                     FuseResidualLN, FuseTransformerLayer, Pass, Unfuse, attention_threshold)
from .trace import trace

__all__ = ["Graph", "Node", "trace", "fuse", "execute", "compile", "CompiledModule", "Pass",
           "FuseMatMulBiasAct", "FuseBiasSwiGLU", "FuseResidualLN", "FuseAttentionBlock",
           "FuseTransformerLayer", "DeadCodeElimination", "Unfuse", "Backend", "get_backend",
           "register_backend", "default_passes", "format_report", "attention_threshold"]


def default_passes(backend="cpu"):
    """The pipeline, in the order that works: each pass's ``requires`` run before it."""
    return [FuseMatMulBiasAct(), FuseBiasSwiGLU(), FuseResidualLN(), FuseAttentionBlock(),
            FuseTransformerLayer(), DeadCodeElimination(), Unfuse(backend)]


def _check_order(passes):
    seen = set()
    for p in passes:
        missing = [r for r in p.requires if r not in seen]
        if missing:
            raise ValueError(f"fuse: {p.name} must run after {', '.join(missing)} (it matches the nodes "
                             f"they create); got the order {[q.name for q in passes]}")
        seen.add(p.name)


def format_report(graph):
    """The candidates that did not fuse, and why, one per line."""
    if not graph.report:
        return "fusion report: every candidate fused"
    lines = ["fusion report: candidates that did not fuse"]
    for pass_name, node, reason in graph.report:
        lines.append(f"  {pass_name}: %{node.id} {node.op} {node.shape}: {reason}")
    return "\n".join(lines)


def fuse(graph, backend="cpu", passes=None, report=False):
    """A rewritten copy of ``graph``: the passes (default: all, in order), then dead-code
    elimination and un-fusing of what ``backend`` lacks (added when not in ``passes``).
    ``report=True`` (or MINIFUSE_FUSION_REPORT=1) prints the candidates that did not fuse."""
    get_backend(backend)
    passes = default_passes(backend) if passes is None else [p() if isinstance(p, type) else p for p in passes]
    _check_order(passes)
    if not any(isinstance(p, Unfuse) for p in passes):
        passes.append(Unfuse(backend))
    if not any(isinstance(p, DeadCodeElimination) for p in passes):
        passes.append(DeadCodeElimination())
    g = graph.copy()
    g.report = []
    for p in passes:
        g = p.run(g)
    if report or os.environ.get("MINIFUSE_FUSION_REPORT", "0") not in ("", "0"):
        print(format_report(g))
    return g


class CompiledModule:
    """A module run as a fused graph. Graphs are specialised to input shapes and dtypes: a call
    with new ones traces and fuses again (cached per shape). Inference only: no gradients."""

    def __init__(self, module, backend="cpu", passes=None, report=False):
        self.module, self.backend, self.passes, self.report = module, get_backend(backend), passes, report
        self.graphs = {}

    def graph_for(self, *inputs):
        from ..tensor import Tensor
        key = tuple((x.shape, str(x.dtype)) if isinstance(x, Tensor) else ("literal", repr(x)) for x in inputs)
        g = self.graphs.get(key)
        if g is None:
            g = fuse(trace(self.module, *inputs), self.backend, self.passes, self.report)
            self.graphs[key] = g
        return g

    def __call__(self, *inputs):
        from ..tensor import Tensor
        g = self.graph_for(*inputs)
        return execute(g, [x for x in inputs if isinstance(x, Tensor)], self.backend)


def compile(module, *example_inputs, backend="cpu", passes=None, report=False):
    """``module`` as a callable that runs its fused graph (traced now for the example inputs)."""
    compiled = CompiledModule(module, backend, passes, report)
    if example_inputs:
        compiled.graph_for(*example_inputs)
    return compiled
