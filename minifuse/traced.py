"""What a traced forward may not do: read a traced tensor's values in Python.

``graph.trace`` records the ops a forward runs. A forward that reads values instead (``.item()``,
``.numpy()``, ``bool(t)`` in an ``if``, ``float(t)``, a NumPy call on ``t.data``) computes in
Python, outside the op layer: the graph would keep the value of the traced example for every later
input. While a trace runs, the tensors it follows (its inputs and every op's result) refuse that
with a `TracingError` naming the operation and the user's line of code.

Tensor methods (``item``, ``numpy``, ``tolist``, ``__array__``, ``__bool__``, ``__float__``,
``__int__``) ask the tracer whether it follows the tensor. A NumPy tensor's array is, for the
trace's duration, a `TracedArray`: a view whose NumPy calls raise (the op layer unwraps it before
an op computes). What a view cannot see passes: an explicit ``np.asarray(t.data)``,
``np.array(t.data)`` or ``t.data.view(np.ndarray)`` (NumPy hands those the plain array), and
NumPy calls on a CuPy tensor's ``.data`` (its Tensor methods are still refused).
"""
import os
import sys

import numpy as np

__all__ = ["TracingError", "TracedArray", "refuse"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# the files between the user's line and the refusal: the tensor and op layers, the tracer, NumPy
_INTERNAL = tuple(os.path.join(_PACKAGE, p) for p in ("tensor.py", "traced.py", "device.py", "creation.py",
                                                      "autograd", "graph", "ops"))


class TracingError(RuntimeError):
    """A traced forward read a traced tensor's value in Python (the graph cannot follow it)."""


def _user_line():
    """'file:line (code)' of the innermost frame outside minifuse's tensor, op and graph layers
    and NumPy: the line of the forward that read the value."""
    frame = sys._getframe(2)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_INTERNAL) and f"{os.sep}numpy{os.sep}" not in path:
            break
        frame = frame.f_back
    if frame is None:
        return "an unknown line"
    import linecache
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" + (f" ({code})" if code else "")


def refuse(what):
    """Raise the TracingError for `what` (e.g. 'Tensor.item()'), naming the user's line."""
    raise TracingError(f"trace: {what} at {_user_line()} reads a traced tensor's values in Python, where the "
                       f"graph cannot follow them: the compiled graph would reuse the traced example's value for "
                       f"every input. Compute it with tensor ops (mf.where instead of an `if` on a tensor), or "
                       f"run this module without mf.compile / graph.trace")


class TracedArray(np.ndarray):
    """A traced NumPy tensor's array while the trace runs: NumPy calls on it, and reading its
    elements as Python values, raise `TracingError`. Views and copies of it stay traced."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        refuse(f"numpy.{ufunc.__name__} on a traced tensor's .data")

    def __array_function__(self, func, types, args, kwargs):
        refuse(f"numpy.{func.__name__} on a traced tensor's .data")

    def item(self, *args):
        refuse("ndarray.item() on a traced tensor's .data")

    def tolist(self):
        refuse("ndarray.tolist() on a traced tensor's .data")

    def __bool__(self):
        refuse("bool() of a traced tensor's .data")

    def __float__(self):
        refuse("float() of a traced tensor's .data")

    def __int__(self):
        refuse("int() of a traced tensor's .data")

    def __index__(self):
        refuse("a traced tensor's .data used as an index")

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if not isinstance(out, np.ndarray):      # one element, as a NumPy scalar: a value in Python
            refuse("an element of a traced tensor's .data")
        return out


def plain(a):
    """`a` as a plain ndarray when it is a TracedArray (what an op computes on), else `a`."""
    return a.view(np.ndarray) if isinstance(a, TracedArray) else a
