"""Run a graph: primitive nodes through their op classes, fused nodes through the backend (the
kernel package of a graph backend, ``backends.py``)."""
from __future__ import annotations

from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from .backends import backend_of, get_backend
from .trace import Slot


def _last_uses(graph):
    """For each node position, the values that are dead after it (to free memory early)."""
    last = {}
    for pos, n in enumerate(graph.nodes):
        for i in n.inputs:
            last[id(i)] = pos
    keep = {id(o) for o in graph.outputs}
    dead = [[] for _ in graph.nodes]
    for key, pos in last.items():
        if key not in keep:
            dead[pos].append(key)
    return dead


def execute(graph, inputs, backend=None):
    """Values of ``graph.outputs`` for ``inputs`` (Tensors, in the order of ``graph.inputs``) on
    ``backend`` (default: the kernel backend of the first input's arrays)."""
    backend = get_backend(backend_of(inputs) if backend is None else backend)
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"execute: the graph takes {len(graph.inputs)} tensor inputs, got {len(inputs)}")
    env = {}
    for node, x in zip(graph.inputs, inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"execute: input '{node.name}' must be a Tensor, got {type(x).__name__}")
        if x.shape != node.shape or x.dtype != node.dtype:
            raise ValueError(f"execute: input '{node.name}' has shape {x.shape} and dtype {x.dtype}; the graph "
                             f"was traced for {node.shape} {node.dtype}")
        env[id(node)] = x

    def value(n):
        if n.op in ("Param", "Const"):
            return n.value
        return env[id(n)]

    dead = _last_uses(graph)
    with no_grad():
        for pos, n in enumerate(graph.nodes):
            if n.fn is not None:
                args = [value(n.inputs[a.index]) if isinstance(a, Slot) else a for a in n.attrs["_args"]]
                env[id(n)] = n.fn.apply(*args, **n.attrs["_kwargs"])
            else:
                if n.op not in backend.impls:
                    raise RuntimeError(f"execute: backend {backend.name!r} does not implement {n.op}; run the "
                                       f"Unfuse pass for it (mf.graph.fuse does)")
                env[id(n)] = Tensor(backend.run(n, [value(i).data for i in n.inputs]))
            for key in dead[pos]:
                env.pop(key, None)
    outs = [value(o) for o in graph.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)
