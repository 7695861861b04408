"""Graph backends: which fused ops a backend implements, and how it runs them.

A fused node's implementation (the ``execute`` of the pass that creates it, graph/passes.py) takes
the kernel package, the node and its input arrays and returns the output array. It is written
once, over the entry points that every kernel package has (``minifuse.kernels.registry``), so each
kernel backend ('cpu', 'cuda', and any registered later) is a graph backend of the same name with
all of them. A backend that lacks a
fused op gets it expanded back into primitives by the Unfuse pass.
"""
from __future__ import annotations

from ..kernels import registry
from .passes import FUSING_PASSES


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


# {fused op: execute(kernels, node, *arrays)}, from the passes that create them.
IMPLS = {p.fused_op: p.execute for p in FUSING_PASSES}

# Implements no fused op: every fusion is expanded back, so it runs the primitives. Useful to
# check that un-fusing is exact and to compare.
REFERENCE = Backend("reference", {})

_BACKENDS = {"reference": REFERENCE}


def backend_of(inputs):
    """The name of the kernel backend for the first Tensor among ``inputs`` ('cpu' when none)."""
    from ..tensor import Tensor
    for x in inputs:
        if isinstance(x, Tensor):
            found = registry.for_array(x.data)
            return "cpu" if found is None else found.name
    return "cpu"


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
