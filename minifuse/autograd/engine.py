"""The engine: reverse-mode accumulation over the tape, in an iterative topological order.

Each recorded op is a ``Context`` node whose ``inputs`` are Tensors. ``backward`` orders the nodes
reachable from the output (depth-first, without recursion, so a chain of 10,000 ops is fine),
then visits them output-first: it calls each op's ``backward``, sums broadcast axes down to the
input's shape (the only place that does this), checks the shape, and hands the gradient to the
producing node or, for a leaf, accumulates it into ``.grad``.

Two hooks let code act while backward runs (``DistributedDataParallel`` starts its gradient
all-reduces with them): a leaf's post-accumulate-grad hooks fire as soon as its ``.grad`` is final
for this backward (the last node that uses the leaf has been visited), and callbacks queued with
``queue_callback`` run once the whole walk is done.
"""
from __future__ import annotations

import threading

from . import inference
from .function import _FREED
from .grad_mode import no_grad

__all__ = ["backward", "unbroadcast", "register_post_accumulate_grad_hook", "queue_callback", "current_backward"]

# While backward runs: .callbacks, the list queue_callback appends to, and .token, its identity
_running = threading.local()


class RemovableHandle:
    """What registering a hook returns: ``remove()`` unregisters it."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_post_accumulate_grad_hook(tensor, hook):
    """Call ``hook(tensor)`` in each backward once the leaf ``tensor``'s ``.grad`` is final."""
    if tensor.grad_fn is not None or not tensor.requires_grad:
        raise RuntimeError("register_post_accumulate_grad_hook: only a leaf tensor that requires grad "
                           f"accumulates a gradient; this one is {'not a leaf' if tensor.grad_fn else 'not requiring grad'}")
    if not callable(hook):
        raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
    if tensor._post_accumulate_hooks is None:
        tensor._post_accumulate_hooks = []
    tensor._post_accumulate_hooks.append(hook)
    return RemovableHandle(tensor._post_accumulate_hooks, hook)


def queue_callback(callback):
    """Run ``callback()`` when the backward that is running now has visited every node (call it
    from a hook); callbacks run in the order they were queued."""
    callbacks = getattr(_running, "callbacks", None)
    if callbacks is None:
        raise RuntimeError("queue_callback: no backward is running; call it from a hook during backward")
    callbacks.append(callback)


def current_backward():
    """A token for the backward running now (a new object for each), or None outside backward:
    a hook tells by it whether it is still in the backward it queued its callback in."""
    return getattr(_running, "token", None)


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched so it has ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return grad  # cannot be a broadcast; the shape check below reports it
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape) if extra else grad


def _topological_order(roots):
    """Nodes reachable from ``root``, each before every node that produced one of its inputs.

    Depth-first post-order with an explicit stack; a node is marked when it is expanded (not
    when pushed), so it finishes only after everything it depends on.
    """
    order, visited = [], set()
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        node, finished = stack.pop()
        if finished:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        if node.inputs is None:
            raise RuntimeError(_FREED.format(node.name()))
        stack.append((node, True))
        for t in node.inputs:
            parent = t.grad_fn if t is not None else None
            if parent is not None and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def _accumulate_leaf(leaf, grad, own=False):
    """leaf.grad += grad. A first gradient is copied, as ops may hand the same array to several
    inputs (add) or return views, unless ``own``: an array nothing else holds (PyTorch's
    AccumulateGrad keeps such a gradient too)."""
    from ..tensor import Tensor
    if leaf.grad is None:
        leaf.grad = Tensor(grad if own else grad.copy())
    else:
        leaf.grad = Tensor(leaf.grad.data + grad)


def _initial_grad(output, gradient):
    from ..tensor import Tensor
    if not output.requires_grad:
        if inference.is_marked(output):
            raise RuntimeError(inference.NO_GRAPH)
        raise RuntimeError("backward: this tensor does not require grad and has no grad_fn; "
                           "call requires_grad_() on an input before computing it")
    if gradient is None:
        if output.data.size != 1:
            raise RuntimeError(f"backward: grad can be implicitly created only for a scalar output; this "
                               f"output has shape {output.shape}, pass gradient= of that shape")
        return output.xp.ones_like(output.data)
    grad = gradient.data if isinstance(gradient, Tensor) else output.xp.asarray(gradient, dtype=output.dtype)
    if tuple(grad.shape) != output.shape:
        raise RuntimeError(f"backward: gradient has shape {tuple(grad.shape)}, expected the output's "
                           f"shape {output.shape}")
    return grad.astype(output.dtype, copy=False)


def backward(tensors, grad_tensors=None, retain_graph=False):
    """Accumulate the gradients of ``tensors`` (weighted by ``grad_tensors``) into the ``.grad``
    of every leaf they depend on. ``Tensor.backward`` is this with one tensor."""
    from ..tensor import Tensor
    if isinstance(tensors, Tensor):
        tensors, grad_tensors = [tensors], [grad_tensors]
    tensors = list(tensors)
    grad_tensors = [None] * len(tensors) if grad_tensors is None else list(grad_tensors)
    pending, roots, leaf_roots = {}, [], []
    for output, gradient in zip(tensors, grad_tensors):
        grad = _initial_grad(output, gradient)
        node = output.grad_fn
        if node is None:
            _accumulate_leaf(output, grad)
            leaf_roots.append(output)
            continue
        if node.inputs is None:
            raise RuntimeError(_FREED.format(node.name()))
        slots = pending.setdefault(id(node), [None] * node.num_outputs)
        k = output._out_index
        slots[k] = grad if slots[k] is None else slots[k] + grad
        roots.append(node)
    order = _topological_order(roots) if roots else []
    hooked = _hooked_leaves(order, leaf_roots)
    outer = getattr(_running, "callbacks", None), getattr(_running, "token", None)
    _running.callbacks, _running.token = [], object()
    try:
        with no_grad():
            for entry in hooked.values():
                if entry[1] == 0:
                    _fire(entry)
            for node in order:
                _visit(node, pending, hooked, retain_graph)
            callbacks = _running.callbacks
            while callbacks:            # a callback may queue another
                callbacks.pop(0)()
    finally:
        _running.callbacks, _running.token = outer


def _hooked_leaves(order, leaf_roots):
    """{id: [leaf, uses left, got a gradient]} for the leaves with post-accumulate hooks: a leaf's
    gradient is final once every node in ``order`` that takes it has been visited."""
    hooked = {}
    for leaf in leaf_roots:
        if leaf._post_accumulate_hooks:
            hooked.setdefault(id(leaf), [leaf, 0, False])[2] = True
    for node in order:
        for t in node.inputs:
            if t is not None and t._post_accumulate_hooks and t.grad_fn is None and t.requires_grad:
                hooked.setdefault(id(t), [t, 0, False])[1] += 1
    return hooked


def _fire(entry):
    if entry[2]:
        for hook in list(entry[0]._post_accumulate_hooks):
            hook(entry[0])


def _visit(node, pending, hooked, retain_graph):
    """Run one node's backward and hand its input gradients on."""
    inputs = node.inputs
    out_grads = pending.pop(id(node), None)
    if out_grads is not None:           # else no gradient flows through this node
        _backward_node(node, out_grads, pending, hooked)
        if not retain_graph:
            node.release()
    for t in inputs:
        entry = hooked.get(id(t)) if t is not None else None
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                _fire(entry)


def _backward_node(node, out_grads, pending, hooked):
    if node._freed:
        raise RuntimeError(_FREED.format(node.name()))
    if node.num_outputs > 1:  # outputs that got no gradient contribute zeros
        out_grads = [node.xp.zeros(s, d) if g is None else g
                     for g, (s, d) in zip(out_grads, node.output_meta)]
    in_grads = node.fn.backward(node, *out_grads)
    if not isinstance(in_grads, tuple):
        in_grads = (in_grads,)
    if len(in_grads) < len(node.inputs):  # trailing non-tensor arguments need no None
        missing = node.inputs[len(in_grads):]
        if any(t is not None and t.requires_grad for t in missing) or len(in_grads) == 0:
            raise RuntimeError(f"{node.name()} returned {len(in_grads)} gradients for "
                               f"{len(node.inputs)} inputs")
    elif len(in_grads) > len(node.inputs):
        raise RuntimeError(f"{node.name()} returned {len(in_grads)} gradients for "
                           f"{len(node.inputs)} inputs")
    new = node.fn.new_gradients
    for i, (inp, g) in enumerate(zip(node.inputs, in_grads)):
        if inp is None or g is None or not inp.requires_grad:
            continue
        returned = g
        g = unbroadcast(g, inp.shape)
        if tuple(g.shape) != inp.shape:
            raise RuntimeError(f"{node.name()} returned a gradient of shape {tuple(g.shape)} for "
                               f"input {i} of shape {inp.shape}")
        if g.dtype != inp.dtype:
            g = g.astype(inp.dtype)
        if inp.grad_fn is None:
            # the engine's own array (a sum, a cast), or one the op made for this input alone
            own = g is not returned or (new and sum(r is g for r in in_grads) == 1)
            _accumulate_leaf(inp, g, own and g.flags.c_contiguous)
            if id(inp) in hooked:
                hooked[id(inp)][2] = True
        else:
            slots = pending.setdefault(id(inp.grad_fn), [None] * inp.grad_fn.num_outputs)
            k = inp._out_index
            slots[k] = g if slots[k] is None else slots[k] + g
