"""Graph capture and fusion across layers: trace a model, rewrite patterns into fused nodes,
un-fuse what a backend lacks, execute.

    g = mf.graph.trace(model, x, mask)          # primitive ops, recorded by the op layer
    g = mf.graph.fuse(g, backend="cpu")         # FusedMatMulBiasAct, ..., FusedTransformerLayer
    y = mf.graph.execute(g, [x, mask])
    fast = mf.compile(model, x, mask)           # all of the above, cached per input shape
    fast = mf.compile(model, x, mask, cuda_graph=True)   # on CUDA: one CUDA graph replay per shape

The backend is the kernel backend of the inputs' arrays ('cpu' for NumPy, 'cuda' for CuPy) unless
named; 'reference' runs every fused op unfused.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..autograd.inference import mark as inference_only
from .backends import Backend, backend_of, get_backend, register_backend
from .executor import execute
from .ir import Graph, Node
from ..nn.dispatch import attention_threshold
from ..traced import TracingError
from .passes import (FUSING_PASSES, DeadCodeElimination, FuseAttentionBlock, FuseBiasSwiGLU, FuseMatMulBiasAct,
                     FuseResidualLN, FuseTransformerLayer, Pass, Unfuse)
from .trace import trace

__all__ = ["Graph", "Node", "trace", "fuse", "execute", "compile", "CompiledModule", "Pass",
           "FuseMatMulBiasAct", "FuseBiasSwiGLU", "FuseResidualLN", "FuseAttentionBlock",
           "FuseTransformerLayer", "DeadCodeElimination", "Unfuse", "Backend", "get_backend",
           "register_backend", "default_passes", "format_report", "attention_threshold", "TracingError"]


def default_passes(backend="cpu"):
    """The pipeline, in the order that works: each pass's ``requires`` run before it."""
    return [p() for p in FUSING_PASSES] + [DeadCodeElimination(), Unfuse(backend)]


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
    with new ones traces and fuses again (cached per shape). Inference only: no gradients.

    ``cuda_graph=True`` (CUDA): the first call of a shape also captures the graph's execution into
    a CUDA graph (kernels/cuda/graphs.py) over buffers of its own; later calls copy their inputs
    into those buffers and replay every kernel with one launch, so small batches are not bound by
    Python's launch cost. Each call returns a new output tensor. The CUDA graphs read the
    parameters by address: they are dropped when a parameter array is replaced (``to``,
    ``load_state_dict``) or the float32 GEMM precision changes; in-place updates are seen. A shape
    whose execution cannot be captured (float64: CuPy's cuBLAS GEMMs) runs eagerly, with a
    warning the first time."""

    def __init__(self, module, backend=None, passes=None, report=False, cuda_graph=False):
        self.module, self.passes, self.report = module, passes, report
        self.backend = None if backend is None else get_backend(backend)
        self.cuda_graph = bool(cuda_graph)
        self.graphs = {}
        self._last_key = None
        self._replays = {}
        self._replay_state = None

    def _key(self, inputs):
        from ..tensor import Tensor
        return tuple((x.shape, str(x.dtype), str(x.device)) if isinstance(x, Tensor) else _literal_key(i, x)
                     for i, x in enumerate(inputs))

    def graph_for(self, *inputs):
        inputs = _graph_inputs(inputs)
        if self.backend is None:
            self.backend = get_backend(backend_of(inputs))
        key = self._key(inputs)
        g = self.graphs.get(key)
        if g is None:
            g = fuse(trace(self.module, *inputs), self.backend, self.passes, self.report)
            self.graphs[key] = g
        self._last_key = key
        return g

    @property
    def graph(self):
        """The fused graph of the most recent input signature (traced by ``compile``'s example
        inputs or by the last call), for looking at: ``print(fast.graph)``, ``fast.graph.draw(path)``.
        ``graphs`` holds one per signature."""
        g = self.graphs.get(self._last_key)
        if g is None:
            raise RuntimeError("compile: no graph yet; call the compiled module, or pass example inputs to mf.compile")
        return g

    def __call__(self, *inputs):
        from ..tensor import Tensor
        inputs = _graph_inputs(inputs)
        g = self.graph_for(*inputs)
        tensors = [x for x in inputs if isinstance(x, Tensor)]
        if not self.cuda_graph:
            return inference_only(execute(g, tensors, self.backend))
        return inference_only(self._replay(g, self._key(inputs), tensors))

    def _replay(self, g, key, tensors):
        from ..precision import get_float32_matmul_precision
        from ..tensor import Tensor
        if self.backend.name != "cuda" or any(x.device.type != "cuda" for x in tensors):
            raise RuntimeError("compile: cuda_graph=True needs the 'cuda' backend, CUDA tensors and a GPU")
        from ..kernels.cuda import CudaGraph
        params = [p.data for p in self.module.parameters()] if hasattr(self.module, "parameters") else []
        state = (get_float32_matmul_precision(), params)
        old = self._replay_state
        if old is None or old[0] != state[0] or any(a is not b for a, b in zip(old[1], params)):
            self._replays.clear()          # holding the arrays keeps their addresses from being reused
            self._replay_state = state
        graph = self._replays.get(key)
        if graph is None:
            static = [x.data.copy() for x in tensors]
            try:
                graph = CudaGraph(lambda *arrays: _as_arrays(execute(g, [Tensor(a) for a in arrays], self.backend)),
                                  *static)
            except RuntimeError as e:       # e.g. float64 GEMMs: CuPy's cuBLAS cannot be captured
                warnings.warn(f"compile: inputs {key} run without a CUDA graph: {e}", RuntimeWarning, stacklevel=3)
                graph = False
            self._replays[key] = graph
        elif graph:
            for buf, x in zip(graph.args, tensors):
                buf[...] = x.data
        if graph is False:
            return execute(g, tensors, self.backend)
        out = graph.replay()
        return tuple(Tensor(o.copy()) for o in out) if isinstance(out, tuple) else Tensor(out.copy())


def _graph_inputs(inputs):
    """The call's arguments as a graph takes them: an array (NumPy, CuPy) becomes a Tensor, an
    input of the graph, so that each call reads its values (traced as a constant, the first
    array's values would be used for every call with the same shape)."""
    from ..tensor import Tensor
    return tuple(Tensor(x) if isinstance(x, np.ndarray) or type(x).__module__.partition(".")[0] == "cupy" else x
                 for x in inputs)


def _literal_key(i, x):
    """The part of a graph's cache key for a non-tensor argument, which the graph fixes: its exact
    value, for values that have one (None, numbers, strings, tuples and lists of them)."""
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes, np.generic)):
        return (type(x).__name__, repr(x))
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(_literal_key(i, v) for v in x)
    raise TypeError(f"compile: argument {i} is a {type(x).__name__}, which a compiled graph can neither take "
                    f"as an input nor fix by value; pass Tensors or arrays (the graph's inputs), or None, "
                    f"numbers, strings and tuples of them (fixed in the graph)")


def _as_arrays(out):
    return tuple(o.data for o in out) if isinstance(out, tuple) else out.data


def compile(module, *example_inputs, backend=None, passes=None, report=False, cuda_graph=False):
    """``module`` as a callable that runs its fused graph (traced now for the example inputs).

    For inference: the graph records no gradients, and ``backward`` from its outputs (or what is
    computed from them) raises; train with the module itself. Tensors and arrays (NumPy, CuPy)
    are the graph's inputs, one graph per combination of their shapes, dtypes and devices; other
    arguments (None, numbers, strings, tuples of them) are fixed in the graph, one graph per value.
    The forward must compute with tensor ops: reading an input-dependent value in Python
    (``.item()``, ``.numpy()``, an ``if`` on a tensor, NumPy on ``.data``) raises
    ``mf.graph.TracingError`` while tracing, naming the line.

    backend: 'cpu', 'cuda' (the kernel backends), 'reference', or None for the kernel backend of
    the inputs' arrays. cuda_graph: on CUDA, replay each input shape from one CUDA graph."""
    compiled = CompiledModule(module, backend, passes, report, cuda_graph)
    if example_inputs:
        compiled.graph_for(*example_inputs)
    return compiled
