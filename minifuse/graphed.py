"""``mf.cuda.make_graphed_callables``: a module's (or function's) forward and its backward, each
captured once into a CUDA graph and launched as one on every call, as
``torch.cuda.make_graphed_callables``.

Why: an eager training step of a layer is a hundred kernels and GEMMs, and on the GPU each costs
microseconds of Python and driver time to decide and launch; a small layer's step is bound by
that host time, not by the GPU (docs/cuda.md measures it). A whole step captured by
``mf.cuda.graph`` launches in one call, but then the loop around it must be written for the
graph. A graphed callable keeps the ordinary loop: it is called like the original, its output
is a Tensor on the tape, ``backward`` reaches the parameters' ``.grad`` the usual way, and
optimizers, ``GradScaler`` and gradient hooks see nothing different. A call copies its
arguments into the graph's input arrays and launches the forward graph; the backward copies
the output gradient in and launches the backward graph.

What it needs, checked on every call (a clear error, never a silent answer):
- the arguments are Tensors with the sample's shapes, dtypes, device and ``requires_grad``, and
  the float32 matmul precision and the CUDA autocast dtype are those of the capture (both are
  compiled into the graph);
- the parameters keep their arrays: the graph reads them where they were (optimizers update in
  place; a new ``p.data`` array would not be seen); and none starts requiring grad after the
  capture (the backward graph computes no gradient for it; one frozen after it is fine);
- a call's backward runs before the next call of the same graphed callable: its saved
  activations live in the graph's buffers, which the next call overwrites (a later backward of
  an earlier output raises).
The samples' arrays become the forward graph's inputs (as in PyTorch): a call with a sample
itself copies nothing, and what was written into it is what the call computes on; a call with
another Tensor copies it into the sample's array (the sample is the graph's buffer now).
Outputs are returned as copies, so an output stays valid after the next call. Under
``no_grad`` the original callable runs (its inference path), not the graph. Inside, the
callable may do only what a capture allows (``mf.cuda.graph``: no host reads such as a mask
that packs sequences, no CuPy cuBLAS), with no random numbers (a module with active dropout is
refused: every replay would draw the same mask) and no control flow that depends on values.
"""
from __future__ import annotations

import numpy as np

from .autograd import engine
from .autograd.autocast import get_autocast_dtype
from .autograd.function import Function
from .autograd.grad_mode import is_grad_enabled
from .precision import get_float32_matmul_precision
from .tensor import Tensor

__all__ = ["make_graphed_callables"]

FN = "make_graphed_callables"


def make_graphed_callables(callables, sample_args, num_warmup_iters=3):
    """Graphed versions of ``callables`` (one callable or a tuple of them; a Module is returned
    itself, its ``forward`` replaced), each captured with its ``sample_args`` (a tuple of CUDA
    Tensors per callable). The capture runs each ``num_warmup_iters`` times first (kernels
    compile, GEMM algorithms are timed), then captures one forward and one backward with an
    output gradient of zeros; the parameters' and samples' ``.grad`` are as before the call.
    Call it in the autocast state the graphed callables will run in."""
    single = not isinstance(callables, tuple)
    if single:
        callables, sample_args = (callables,), (sample_args,)
    if not isinstance(sample_args, tuple) or len(sample_args) != len(callables):
        raise TypeError(f"{FN}: 'sample_args' must be a tuple of argument tuples, one per callable "
                        f"({len(callables)}), got {_kind(sample_args)}")
    if isinstance(num_warmup_iters, bool) or not isinstance(num_warmup_iters, (int, np.integer)) \
            or num_warmup_iters < 1:
        raise ValueError(f"{FN}: 'num_warmup_iters' must be an int >= 1, got {num_warmup_iters!r}")
    graphed = tuple(_graph_one(fn, args, int(num_warmup_iters)) for fn, args in zip(callables, sample_args))
    return graphed[0] if single else graphed


def _graph_one(fn, args, warmup):
    from .nn.dropout import Dropout, inactive
    from .nn.module import Module
    if not callable(fn):
        raise TypeError(f"{FN}: each callable must be a Module or a function, got {_kind(fn)}")
    if isinstance(fn, GraphedCallable) or isinstance(getattr(fn, "forward", None), GraphedCallable):
        raise ValueError(f"{FN}: this callable is graphed already (its replay cannot be captured again)")
    if isinstance(fn, Module):
        active = [n for n, m in fn.named_modules() if isinstance(m, Dropout) and not inactive(m)]
        if active:
            raise ValueError(f"{FN}: module has active dropout ({', '.join(n or 'itself' for n in active)}): "
                             f"every replay would draw the same mask; call .eval() or use p=0")
    if not isinstance(args, tuple) or not args:
        raise TypeError(f"{FN}: each entry of 'sample_args' must be a non-empty tuple of Tensors, got {_kind(args)}")
    for i, a in enumerate(args):
        if not isinstance(a, Tensor):
            raise TypeError(f"{FN}: sample argument {i} must be a Tensor, got {_kind(a)}")
        if a.data.size == 0:            # every call has the sample's shape: nothing to capture
            raise ValueError(f"{FN}: sample argument {i} has no elements (shape {a.shape}); capture with a "
                             f"batch of the shape the calls will have")
        if a.device.type != "cuda":
            raise ValueError(f"{FN}: sample argument {i} must be on a CUDA device, got {a.device}")
    if isinstance(fn, Module):
        fn.forward = GraphedCallable(fn.forward, args, tuple(fn.parameters()), warmup)
        return fn
    return GraphedCallable(fn, args, (), warmup)


def _check_leaves(outputs, known):
    """Every tensor requiring grad that ``outputs`` depend on is one of ``known`` (the callable's
    arguments and parameters): the replayed backward returns gradients for those only, so any
    other (a tensor the function closes over) would silently never get one."""
    ids = {id(t) for t in known}
    for node in engine._topological_order([o.grad_fn for o in outputs if o.grad_fn is not None]):
        for t in node.inputs:
            if t is not None and t.grad_fn is None and t.requires_grad and id(t) not in ids:
                raise ValueError(f"{FN}: the callable uses a tensor requiring grad (shape {t.shape}) that is "
                                 f"neither an argument nor a parameter of a Module: its gradient would never "
                                 f"be computed; pass it as an argument, or graph a Module that owns it")


def _kind(x):
    return type(x).__name__


class GraphedCallable:
    """``fn`` with its forward and backward replayed from two CUDA graphs (the module docstring).
    Build it with `make_graphed_callables`."""

    def __init__(self, fn, sample_args, parameters, warmup):
        from .cuda import CUDAGraph, graph
        self.fn = fn
        self.params = params = tuple(p for p in parameters if p.requires_grad)   # those that get gradients
        self._signature = [(a.shape, a.dtype, a.device, a.requires_grad) for a in sample_args]
        # the graphs read them all; the backward graph computes gradients for those that required them
        self._parameters = [(p, p.data.data.ptr, p.requires_grad) for p in parameters]
        self._context = (get_float32_matmul_precision(), get_autocast_dtype("cuda"))
        leaves = [a for a in sample_args if a.requires_grad] + list(params)
        kept = [(t.grad, t._post_accumulate_hooks) for t in leaves]
        try:
            for t in leaves:                    # the capture's hooks and gradients are not the caller's
                t._post_accumulate_hooks = None
            for _ in range(warmup):
                self._run(sample_args, leaves)
            # the samples' arrays are the forward graph's inputs: a call with a sample itself copies nothing
            self.inputs = tuple(Tensor(a.data, requires_grad=a.requires_grad) for a in sample_args)
            for p in params:
                p.grad = None
            self._forward_graph, self._backward_graph = CUDAGraph(), CUDAGraph()
            with graph(self._forward_graph):
                outputs = fn(*self.inputs)
            self.single = isinstance(outputs, Tensor)
            outputs = (outputs,) if self.single else outputs
            if not isinstance(outputs, tuple) or not all(isinstance(o, Tensor) for o in outputs):
                raise TypeError(f"{FN}: the callable must return a Tensor or a tuple of Tensors, got "
                                f"{_kind(outputs)}")
            self.outputs = tuple(o.data for o in outputs)
            self._differentiable = [i for i, o in enumerate(outputs) if o.requires_grad]
            if not self._differentiable:
                raise ValueError(f"{FN}: no output of the callable requires grad: there is no backward to "
                                 f"graph; call it under mf.no_grad() instead")
            _check_leaves([outputs[i] for i in self._differentiable], self.inputs + tuple(params))
            self.output_grads = tuple(o.xp.zeros_like(o.data) for o in outputs)
            with graph(self._backward_graph):
                engine.backward([outputs[i] for i in self._differentiable],
                                [Tensor(self.output_grads[i]) for i in self._differentiable])
            self.input_grads = tuple(None if t.grad is None else t.grad.data
                                     for t in self.inputs + tuple(params))
        finally:
            for t, (g, hooks) in zip(leaves, kept):
                t.grad, t._post_accumulate_hooks = g, hooks
        self.generation = 0          # calls so far: a backward must belong to the latest

    def __deepcopy__(self, memo):
        raise TypeError("graphed callable: cannot be copied or pickled (it holds CUDA graphs and their "
                        "buffers); copy the module before graphing it, and graph the copy")

    __reduce_ex__ = __deepcopy__

    def _run(self, args, leaves):
        """One eager forward + backward (a warm-up), the output gradient zeros."""
        outputs = self.fn(*args)
        outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
        used = [o for o in outputs if isinstance(o, Tensor) and o.requires_grad]
        if used:
            engine.backward(used, [Tensor(o.xp.zeros_like(o.data)) for o in used])
        for t in leaves:
            t.grad = None

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"graphed callable: takes its Tensors positionally, got keyword arguments "
                            f"{sorted(kwargs)}")
        if not is_grad_enabled():
            return self.fn(*args)
        self._check(args)
        out = _Replay.apply(self, *args, *self.params)
        return out[0] if self.single and isinstance(out, tuple) else out

    def _check(self, args):
        if len(args) != len(self._signature):
            raise TypeError(f"graphed callable: takes {len(self._signature)} Tensors (as its sample), got {len(args)}")
        for i, (a, (shape, dtype, device, grad)) in enumerate(zip(args, self._signature)):
            if not isinstance(a, Tensor):
                raise TypeError(f"graphed callable: argument {i} must be a Tensor, got {_kind(a)}")
            if (a.shape, a.dtype, a.device, a.requires_grad) != (shape, dtype, device, grad):
                raise ValueError(f"graphed callable: argument {i} must be like the sample it was captured with "
                                 f"(shape {shape}, {dtype}, {device}, requires_grad={grad}), got shape "
                                 f"{a.shape}, {a.dtype}, {a.device}, requires_grad={a.requires_grad}")
        context = (get_float32_matmul_precision(), get_autocast_dtype("cuda"))
        if context != self._context:
            raise RuntimeError(f"graphed callable: captured at float32 matmul precision {self._context[0]!r} and "
                               f"CUDA autocast {self._context[1]}, called at {context[0]!r} and {context[1]}; "
                               f"graph it again in the state it runs in")
        for p, address, graded in self._parameters:
            if p.requires_grad and not graded:
                raise RuntimeError("graphed callable: a parameter requires grad that did not at the capture (the "
                                   "backward graph computes no gradient for it); graph again")
            if p.data.data.ptr != address:
                raise RuntimeError("graphed callable: a parameter's array was replaced after the capture (the "
                                   "graph reads the old one); update parameters in place, or graph again")

    def forward(self, arrays):
        """Replay the forward on ``arrays``: the outputs (copies) and this call's generation."""
        for static, a in zip(self.inputs, arrays[:len(self.inputs)]):
            if static.data.data.ptr != a.data.ptr:
                static.data[...] = a
        self._forward_graph.replay()
        self.generation += 1
        return tuple(o.copy() for o in self.outputs), self.generation

    def backward(self, generation, grads):
        """Replay the backward for the forward of ``generation``: the input and parameter gradients."""
        if generation != self.generation:
            raise RuntimeError("graphed callable: backward of an earlier call after a later one overwrote its "
                               "saved activations (the graph's buffers); run each call's backward before the "
                               "next call, or use one graphed callable per call site")
        for i in self._differentiable:
            g = grads[i]
            if g is None:
                self.output_grads[i].fill(0)
            else:
                self.output_grads[i][...] = g
        self._backward_graph.replay()
        # the inputs' gradients flow on through the tape: copies, as the next replay rewrites these
        n = len(self.inputs)
        return tuple(None if g is None else (g.copy() if i < n else g) for i, g in enumerate(self.input_grads))


class _Replay(Function):
    """The graphed callable as one node on the tape; its arguments are the call's Tensors and
    the parameters (whose gradients the engine accumulates into ``.grad``)."""

    float_only = False
    same_dtype = False
    name = "graphed_callable"

    @staticmethod
    def forward(ctx, graphed, *arrays):
        outputs, ctx.generation = graphed.forward(arrays)
        ctx.graphed = graphed
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        return (None,) + ctx.graphed.backward(ctx.generation, grads)
