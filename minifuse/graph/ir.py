"""The graph IR: a list of Nodes in execution order.

A Node is one value: a graph input, a parameter, a constant, one primitive op call (``fn`` is
the op's Function class, recorded with its non-tensor arguments) or one fused op. Its
``inputs`` are other Nodes. Shapes and dtypes are those seen when the graph was traced.
"""
from __future__ import annotations

import itertools

import numpy as np

SOURCE_OPS = ("Input", "Param", "Const")


class Node:
    _ids = itertools.count()

    def __init__(self, op, inputs=(), attrs=None, shape=(), dtype=None, name=None, fn=None, value=None):
        self.id = next(Node._ids)
        self.op = op                  # 'MatMul', 'Add', ..., 'Input', 'Param', 'Const', 'Fused...'
        self.inputs = list(inputs)    # Nodes
        self.attrs = dict(attrs or {})
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.name = name              # inputs and parameters: their names
        self.fn = fn                  # primitive ops: the Function class to call
        self.value = value            # Param and Const: the Tensor
        self.subgraph = None          # fused ops: the nodes they replaced, for Unfuse
        self.external = None          # fused ops: ``inputs`` as the subgraph knew them

    def arg(self, name):
        """A recorded op's argument by its name in ``forward``: an input Node or a literal."""
        slots = self.attrs.get("_slots", {})
        if name in slots:
            return self.inputs[slots[name]]
        return self.attrs.get(name)

    def copy(self, inputs):
        n = Node(self.op, inputs, self.attrs, self.shape, self.dtype, self.name, self.fn, self.value)
        n.subgraph, n.external = self.subgraph, self.external
        return n

    @property
    def is_source(self):
        return self.op in SOURCE_OPS

    def label(self):
        if self.op in ("Input", "Param"):
            return f"{self.op}({self.name})"
        return self.op

    def __repr__(self):
        return f"%{self.id} = {self.label()}"


class Graph:
    """Computing nodes in execution order, with the graph's inputs and outputs.

    Sources (inputs, parameters, constants) are not in ``nodes``: nodes refer to them.
    """

    def __init__(self, nodes, inputs, outputs):
        self.nodes = list(nodes)
        self.inputs = list(inputs)     # Input nodes, in call order
        self.outputs = list(outputs)   # Nodes whose values are returned
        self.report = []               # (pass name, node, reason) for candidates that did not fuse

    def copy(self):
        """A graph of new computing nodes (sources are shared; they are never rewritten)."""
        new = {}
        for n in self.nodes:
            new[id(n)] = n.copy([new.get(id(i), i) for i in n.inputs])
        g = Graph([new[id(n)] for n in self.nodes], self.inputs, [new.get(id(o), o) for o in self.outputs])
        g.report = list(self.report)
        return g

    # ---- queries ------------------------------------------------------------------------------
    def consumers(self):
        """id(node) -> list of nodes that use it (once per use)."""
        users = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users.setdefault(id(i), []).append(n)
        return users

    def ops(self):
        """The op names of the computing nodes (sources left out), in order."""
        return [n.op for n in self.nodes if not n.is_source]

    def count(self, op):
        return sum(n.op == op for n in self.nodes)

    def is_output(self, node):
        return any(o is node for o in self.outputs)

    # ---- rewriting -----------------------------------------------------------------------------
    def replace(self, old_nodes, new_node):
        """Put ``new_node`` where the last of ``old_nodes`` was; its consumers now use ``new_node``.

        The last old node is the one whose value ``new_node`` computes; the others must have no
        consumers outside ``old_nodes`` (the passes check this before calling).
        """
        old_ids = {id(n) for n in old_nodes}
        for n in old_nodes:
            for i in n.inputs:
                if id(i) not in old_ids and not i.is_source and not any(i is j for j in new_node.inputs):
                    raise ValueError(f"replace: {n} reads {i}, which is neither fused nor an input of {new_node.op}")
        last = max(old_nodes, key=self.nodes.index)
        new_node.subgraph = [n for n in self.nodes if id(n) in old_ids]
        new_node.external = list(new_node.inputs)
        nodes = []
        for n in self.nodes:
            if n is last:
                nodes.append(new_node)
            elif id(n) not in old_ids:
                n.inputs = [new_node if i is last else i for i in n.inputs]
                nodes.append(n)
        self.nodes = nodes
        self.outputs = [new_node if o is last else o for o in self.outputs]

    def expand(self, fused):
        """Undo one fusion: put the nodes ``fused`` replaced back in its place (exactly)."""
        current = {id(orig): cur for orig, cur in zip(fused.external, fused.inputs)}
        restored = fused.subgraph
        for n in restored:
            n.inputs = [current.get(id(i), i) for i in n.inputs]
        last = restored[-1]
        nodes = []
        for n in self.nodes:
            if n is fused:
                nodes.extend(restored)
            else:
                n.inputs = [last if i is fused else i for i in n.inputs]
                nodes.append(n)
        self.nodes = nodes
        self.outputs = [last if o is fused else o for o in self.outputs]
        return restored

    # ---- printing ------------------------------------------------------------------------------
    def __str__(self):
        lines = [f"graph({', '.join('%' + str(n.id) + ':' + n.name for n in self.inputs)}):"]
        for n in self.nodes:
            args = ", ".join(_ref(i) for i in n.inputs)
            attrs = {k: v for k, v in n.attrs.items() if not k.startswith("_")}
            extra = (" " + " ".join(f"{k}={_short(v)}" for k, v in attrs.items())) if attrs else ""
            lines.append(f"  %{n.id} = {n.op}({args}){extra}  # {n.shape} {n.dtype}")
        lines.append(f"  return {', '.join('%' + str(o.id) for o in self.outputs)}")
        return "\n".join(lines)

    def to_dot(self):
        """Graphviz DOT text: ``dot -Tpng`` renders it."""
        lines = ["digraph minifuse {", "  rankdir=TB; node [shape=box, fontname=Helvetica];"]
        sources = {id(i): i for n in self.nodes for i in n.inputs if i.op in ("Input", "Param")}
        for n in list(sources.values()) + self.nodes:
            style = ', style=filled, fillcolor="#ffd8a8"' if n.op.startswith("Fused") else \
                ', shape=ellipse' if n.is_source else ""
            lines.append(f'  n{n.id} [label="{n.label()}\\n{n.shape}"{style}];')
            for i in n.inputs:
                if i.op != "Const":
                    lines.append(f"  n{i.id} -> n{n.id};")
        lines.append("}")
        return "\n".join(lines)

    def draw(self, path, png=True):
        """Write the graph to ``path``.dot and, where Graphviz or matplotlib is installed,
        ``path``.png (``minifuse/graph/draw.py``); returns the paths written."""
        from .draw import draw
        return draw(self, path, png)


def _ref(node):
    if node.op in ("Param", "Input"):
        return node.name
    if node.op == "Const":
        return "const" + str(node.shape if node.shape else "")
    return f"%{node.id}"


def _short(v):
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
