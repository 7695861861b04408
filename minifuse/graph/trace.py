"""trace(module, *inputs): run the model once and record every op call as a graph Node.

The recording happens in ``Function.apply`` (the tracer hook), so the graph is made by the same
op layer the tape uses. Tensors the model reads that no traced op produced become ``Param``
nodes (the module's parameters, by name) or ``Const`` nodes (anything else, by value).
The model runs unfused, without grad and in eval mode (dropout off) while tracing; every
submodule's train/eval mode is restored afterwards. Reading the values of the inputs, or of what
ops computed from them, in Python is refused while tracing (``minifuse.traced``).
"""
from __future__ import annotations

import inspect

import numpy as np

from ..autograd.function import _arg_names, set_tracer
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor
from ..traced import TracedArray, plain, refuse
from .ir import Graph, Node


class Slot:
    """Marks a tensor argument in a recorded call: the value comes from ``node.inputs[index]``."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __repr__(self):
        return f"Slot({self.index})"


class Tracer:
    def __init__(self, params):
        self.params = params      # id(tensor) -> (name, tensor)
        self.nodes = []
        self.by_id = {}           # id(tensor) -> Node
        self.alive = []           # keep traced tensors alive so their ids stay unique
        self.followed = {}        # id(tensor) -> its array before the trace: inputs and op results

    def bind(self, tensor, node):
        self.by_id[id(tensor)] = node
        self.alive.append(tensor)

    def follow(self, tensor, node):
        """Bind an input or an op's result, whose values depend on the inputs: reading them in
        Python is refused (minifuse.traced) until `release`."""
        self.bind(tensor, node)
        if id(tensor) in self.followed:      # the same tensor passed twice
            return
        self.followed[id(tensor)] = tensor.data
        if type(tensor.data) is np.ndarray:
            tensor.data = tensor.data.view(TracedArray)

    def follows(self, tensor):
        return id(tensor) in self.followed

    def release(self):
        """Give every followed tensor its own array back."""
        for t in self.alive:
            if id(t) in self.followed:
                t.data = self.followed[id(t)]

    def unwrap(self, fn, raw, args, kwargs):
        """The arrays an op computes on: plain arrays for its tensors; a traced array passed as
        a plain argument (``x[t.data]``) would be fixed into the graph, and is refused."""
        for i, (r, a) in enumerate(zip(raw, args)):
            if isinstance(r, TracedArray) and not isinstance(a, Tensor):
                refuse(f"a traced tensor's values passed to {fn.__name__} as a fixed argument {i} (its .data, "
                       f"or a bool mask as an index: x[mask])")
        if any(isinstance(v, TracedArray) for v in kwargs.values()):
            refuse(f"a traced tensor's values passed to {fn.__name__} as a fixed keyword argument")
        return [plain(r) for r in raw]

    def node_for(self, t):
        node = self.by_id.get(id(t))
        if node is None:
            if id(t) in self.params:
                name, _ = self.params[id(t)]
                node = Node("Param", shape=t.shape, dtype=t.dtype, name=name, value=t)
            else:
                node = Node("Const", shape=t.shape, dtype=t.dtype, value=t.detach())
            self.bind(t, node)
        return node

    def record(self, fn, args, kwargs, result):
        if isinstance(result, tuple):
            raise NotImplementedError(f"trace: {fn.__name__} returns several outputs; tracing supports "
                                      f"single-output ops")
        names, star = _arg_names(fn)
        template, inputs, attrs, slots = [], [], {}, {}
        for i, a in enumerate(args):
            name = names[i] if i < len(names) else f"{star}[{i - len(names)}]"
            if isinstance(a, Tensor):
                slots[name] = len(inputs)
                template.append(Slot(len(inputs)))
                inputs.append(self.node_for(a))
            else:
                template.append(a)
                attrs[name] = a
        attrs.update(kwargs)
        attrs["_args"], attrs["_kwargs"], attrs["_slots"] = template, dict(kwargs), slots
        node = Node(fn.__name__, inputs, attrs, shape=result.shape, dtype=result.dtype, fn=fn)
        self.nodes.append(node)
        self.follow(result, node)


def trace(module, *example_inputs, input_names=None):
    """The graph of primitive ops that ``module(*example_inputs)`` runs.

    Tensor inputs become ``Input`` nodes named after ``forward``'s parameters; other arguments
    (None, numbers) are passed as they are and fixed in the graph. Shapes are those of the example.
    """
    from ..nn.dispatch import fusion
    forward = getattr(module, "forward", module)
    if input_names is None:
        params = [p.name for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        input_names = params + [f"input{i}" for i in range(len(params), len(example_inputs))]
    named = dict(module.named_parameters()) if hasattr(module, "named_parameters") else {}
    tracer = Tracer({id(p): (n, p) for n, p in named.items()})
    inputs = []
    for name, x in zip(input_names, example_inputs):
        if isinstance(x, Tensor):
            node = Node("Input", shape=x.shape, dtype=x.dtype, name=name)
            tracer.follow(x, node)
            inputs.append(node)
    # every submodule's own mode, restored after the run (a model may mix train and eval parts)
    modes = [(m, m.training) for m in module.modules()] if hasattr(module, "modules") else []
    if hasattr(module, "eval"):
        module.eval()
    old = set_tracer(tracer)
    try:
        with no_grad(), fusion(False):
            out = module(*example_inputs)
    finally:
        set_tracer(old)
        tracer.release()
        for m, training in modes:
            object.__setattr__(m, "training", training)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    outputs = []
    for o in outs:
        if not isinstance(o, Tensor) or id(o) not in tracer.by_id:
            raise TypeError("trace: the model must return Tensors computed from its inputs")
        outputs.append(tracer.by_id[id(o)])
    return Graph(tracer.nodes, inputs, outputs)
