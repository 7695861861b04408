"""``Function``: one differentiable op, its forward and backward side by side.

``forward(ctx, *args)`` and ``backward(ctx, *grads)`` work on raw arrays (NumPy, or CuPy on
CUDA), the way needle's ``compute`` does: that is where Numba kernels plug in. ``Fn.apply(...)``
unwraps Tensor arguments, runs ``forward``, wraps the result, and, when grad mode is on and an
input requires grad, records the ``ctx`` as the output's ``grad_fn``: one node on the tape.
"""
from __future__ import annotations

import inspect
import threading

import numpy as np

from ..device import array_module, device_of
from ..dtypes import HALF, is_floating
from . import inference
from .autocast import _state as _autocast_state, cast_inputs
from .grad_mode import is_grad_enabled

__all__ = ["Function", "Context"]

# A graph tracer (minifuse.graph.trace) listens to every op call through this thread-local slot:
# the graph is recorded by the same op layer that the tape uses, not by a second implementation.
_tracing = threading.local()


def active_tracer():
    return getattr(_tracing, "tracer", None)


def set_tracer(tracer):
    """Install ``tracer`` (an object with ``record(fn, args, kwargs, outputs)``); returns the old one."""
    old = active_tracer()
    _tracing.tracer = tracer
    return old


def mixed_devices(op, name0, dev0, name, dev):
    """The error for tensors of two devices in one op (one wording for every op and fused function)."""
    return RuntimeError(f"{op}: all tensors must be on one device; argument '{name0}' is on {dev0}, "
                        f"'{name}' on {dev}")


class Context:
    """What forward leaves for backward; also the tape node (``tensor.grad_fn``)."""

    def __init__(self, fn, needs_input_grad, xp):
        self.fn = fn
        self.needs_input_grad = needs_input_grad
        self.xp = xp                   # numpy or cupy: the array module of the inputs
        self.inputs = None             # the Tensor arguments (None elsewhere), set when recorded
        self.num_outputs = 1
        self.grad_dtype = None         # a fused op's parameter gradients' dtype; None: the parameters'
        self._saved = ()
        self._freed = False

    def save_for_backward(self, *arrays):
        """Keep arrays for backward. Only what backward needs: this is the memory a graph holds."""
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(_FREED.format(self.name()))
        return self._saved

    def name(self):
        return f"{self.fn.__name__}Backward"

    def release(self):
        """Free saved arrays and input references (done after backward unless retain_graph)."""
        self._saved = ()
        self.inputs = None
        self._freed = True

    def __repr__(self):
        return f"<{self.name()}>"


_FREED = ("{}: trying to backward through the graph a second time (or to read saved arrays after "
          "they were freed). Pass retain_graph=True to the first backward() to keep the graph.")


def _arg_names(fn_cls):
    """Names of forward's positional arguments after ctx, for error messages (cached)."""
    names = fn_cls.__dict__.get("_arg_names_cache")
    if names is None:
        params = list(inspect.signature(fn_cls.forward).parameters.values())[1:]
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        star = [p.name for p in params if p.kind is p.VAR_POSITIONAL]
        fn_cls._arg_names_cache = names = (names, star[0] if star else None)
    return names


def arg_name(fn_cls, i):
    names, star = _arg_names(fn_cls)
    if i < len(names):
        return names[i]
    return f"{star or 'arg'}[{i - len(names)}]"


def _keep(a, dtype):
    """``a`` in ``dtype`` when it is a floating array of another (wider) dtype."""
    return a.astype(dtype) if is_floating(a.dtype) and a.dtype != dtype else a


class Function:
    """Base class of every op. Subclasses define static ``forward`` and ``backward``.

    Class attributes that the engine checks for every op, in one place:
      float_only   every Tensor argument must have a floating dtype (default True)
      same_dtype   all floating Tensor arguments must share one dtype (default True)
      differentiable  False for ops whose output never has a gradient (comparisons)
      name         the op's name in error messages (default: the class name, lower case)
      autocast     its precision under ``mf.autocast``: None, "lower", "float32" or "promote"
                   (autograd/autocast.py)
      new_gradients  ``backward`` returns arrays it made for the purpose: none is a view of an
                   output gradient or of a saved array, and none is kept anywhere (the same
                   array may be returned for two inputs). A leaf's first gradient from such an op
                   becomes its ``.grad`` as it is; otherwise the engine copies it (default False)
    ``backward`` returns one gradient per forward argument (None where there is none; trailing
    non-tensor arguments such as ``dim`` may be left out); a
    gradient may have the broadcast shape of the output: the engine sums it down to the input's.
    """

    float_only = True
    same_dtype = True
    differentiable = True
    name = None
    autocast = None
    new_gradients = False

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def op_name(cls):
        return cls.name or cls.__name__.lower()

    @classmethod
    def apply(cls, *args, **kwargs):
        from ..tensor import Tensor

        if cls.autocast is not None and _autocast_state.dtypes:
            args = cast_inputs(cls.autocast, args)
        tensors = [(i, a) for i, a in enumerate(args) if isinstance(a, Tensor)]
        xp = cls._check_inputs(tensors)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = cls.differentiable and any(needs) and is_grad_enabled()
        ctx = Context(cls, needs, xp)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        tracer = active_tracer()
        if tracer is not None:
            raw = tracer.unwrap(cls, raw, args, kwargs)
        out = cls.forward(ctx, *raw, **kwargs)
        half = next((t.dtype for _, t in tensors if t.dtype in HALF), None) if cls.same_dtype else None
        if half is not None:    # NumPy promotes ml_dtypes' bfloat16 with Python floats: keep the half dtype
            out = tuple(_keep(o, half) for o in out) if isinstance(out, tuple) else _keep(out, half)
        if record:
            ctx.inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        else:
            ctx.release()
        if isinstance(out, tuple):
            ctx.num_outputs = len(out)
            ctx.output_meta = [(o.shape, o.dtype) for o in out]
            result = tuple(Tensor._from_op(o, ctx if record else None, i) for i, o in enumerate(out))
        else:
            result = Tensor._from_op(out, ctx if record else None, 0)
        if not record and inference.any_marked(tensors):
            inference.mark(result)
        if tracer is not None:
            tracer.record(cls, args, kwargs, result)
        return result

    @classmethod
    def _check_inputs(cls, tensors):
        """Device and dtype rules shared by all ops. Returns the array module of the inputs."""
        if not tensors:
            return np
        first_i, first = tensors[0]
        dev = device_of(first.data)
        ref_dtype = None
        for i, t in tensors:
            if cls.float_only and not is_floating(t.dtype):
                raise TypeError(f"{cls.op_name()}: argument '{arg_name(cls, i)}' must be a floating-point "
                                f"tensor (float16/32/64), got {t.dtype}")
            if device_of(t.data) != dev:
                raise mixed_devices(cls.op_name(), arg_name(cls, first_i), dev, arg_name(cls, i), device_of(t.data))
            if cls.same_dtype and is_floating(t.dtype):
                if ref_dtype is None:
                    ref_dtype = (i, t.dtype)
                elif t.dtype != ref_dtype[1]:
                    raise TypeError(f"{cls.op_name()}: dtypes differ: argument '{arg_name(cls, ref_dtype[0])}' "
                                    f"is {ref_dtype[1]}, '{arg_name(cls, i)}' is {t.dtype}; convert one with "
                                    f".to({ref_dtype[1]}) first")
        return array_module(first.data)
