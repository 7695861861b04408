"""``Tensor``: an array (NumPy, or CuPy on CUDA) plus what autograd needs to know about it.

A tensor made by an op that recorded onto the tape carries ``grad_fn``, the op's node; a tensor
made by the user is a leaf (``grad_fn is None``) and, when ``requires_grad``, receives ``.grad``.
Every method below is a thin call of an op in ``minifuse.ops``; the math lives there.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import dtypes
from .autograd import engine
from .autograd.function import active_tracer
from .device import Device, array_module, capturing, device_of
from .ops import elementwise as E, linalg as L, nn as N, reduce as R, shape as S
from .ops._util import normalize_dims
from .traced import TracedArray, refuse

__all__ = ["Tensor"]

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _read(t, what):
    """A Python read of `t`'s values: refused while a trace follows `t` (minifuse.traced)."""
    tracer = active_tracer()
    if tracer is not None and tracer.follows(t):
        refuse(what)


def _as_array(data, dtype=None):
    """Array from user data; Python floats become the default float dtype (float32)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, TracedArray):
        refuse("making a tensor of a traced tensor's values (mf.tensor(t), Tensor(t.data))")
    xp = array_module(data)
    if dtype is None and not hasattr(data, "dtype"):
        arr = np.asarray(data)
        if arr.dtype.kind == "f":
            arr = arr.astype(dtypes.get_default_dtype())
        elif arr.dtype.kind == "i":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "bu":
            raise TypeError(f"tensor: cannot make a tensor from data of type {arr.dtype}")
        return arr
    arr = xp.asarray(data, dtype=dtype)
    dtypes.as_dtype(arr.dtype)  # raises on unsupported dtypes (complex, object, strings)
    return arr


class Tensor:
    """An n-dimensional array with reverse-mode autograd. Make one with ``mf.tensor(...)``."""

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_out_index", "_post_accumulate_hooks", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor calls our reflected operators

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtypes.as_dtype(dtype))
        self.grad = None
        self.grad_fn = None
        self._out_index = 0
        self._post_accumulate_hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_op(cls, array, grad_fn, index):
        if isinstance(array, np.generic):  # NumPy turns 0-d results into scalars; keep arrays
            array = np.asarray(array)
        t = cls.__new__(cls)
        t.data, t.grad, t.grad_fn, t._out_index = array, None, grad_fn, index
        t._post_accumulate_hooks = None
        t.requires_grad = grad_fn is not None
        return t

    # ---- what it is -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: device_of(self.data))
    xp = property(lambda self: array_module(self.data), doc="numpy or cupy, whichever owns the data")
    is_leaf = property(lambda self: self.grad_fn is None)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def item(self):
        _read(self, "Tensor.item()")
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor can be converted to a Python scalar, "
                             f"this one has shape {self.shape}")
        return self.data.reshape(()).item() if self.xp is np else self.data.reshape(()).get().item()

    def numpy(self):
        """The data as a NumPy array (shared memory on the CPU). Like PyTorch, refuses a tensor
        that requires grad: call ``.detach().numpy()``."""
        _read(self, "Tensor.numpy()")
        if self.requires_grad:
            raise RuntimeError("numpy: can't call numpy() on a tensor that requires grad; "
                               "use tensor.detach().numpy()")
        return self.data if self.xp is np else self.data.get()

    def __array__(self, dtype=None, copy=None):
        _read(self, "numpy.asarray(tensor) (Tensor.__array__)")
        arr = self._host()
        return arr if dtype is None else arr.astype(dtype)

    def _host(self):
        return np.asarray(self.data) if self.xp is np else self.data.get()

    def tolist(self):
        _read(self, "Tensor.tolist()")
        return self._host().tolist()

    def __repr__(self):
        arr = self._host()
        body = np.array2string(arr, separator=", ", prefix="tensor(", precision=4,
                               floatmode="fixed" if dtypes.is_floating(arr.dtype) else "maxprec")
        extras = []
        if self.dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_):
            extras.append(f"dtype={self.dtype}")
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ---- autograd -------------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if requires_grad and not dtypes.is_floating(self.dtype):
            raise RuntimeError(f"requires_grad_: only floating-point tensors can require gradients, "
                               f"this one is {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad_: can't turn off requires_grad on a non-leaf tensor; "
                               "use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """The same data, cut from the tape (no copy)."""
        return Tensor._from_op(self.data, None, 0)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` in each ``backward`` once this leaf's ``.grad`` is final for that
        backward (every contribution accumulated). Returns a handle whose ``remove()`` unregisters it."""
        return engine.register_post_accumulate_grad_hook(self, hook)

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate gradients of this tensor into the ``.grad`` of every leaf it depends on."""
        engine.backward([self], [gradient], retain_graph)

    # ---- conversions -----------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        """``to(dtype)``, ``to(device)``, or both; differentiable; returns self when nothing changes."""
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        out = self
        if device is not None and Device(device) != self.device:
            out = E.ToDevice.apply(out, Device(device))
        if dtype is not None and dtypes.as_dtype(dtype) != out.dtype:
            out = E.Cast.apply(out, dtypes.as_dtype(dtype))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    def long(self):
        return self.to(dtypes.int64)

    def clone(self):
        return self + 0 if dtypes.is_floating(self.dtype) else Tensor(self.data.copy())

    def contiguous(self):
        return self  # arrays are copied to contiguous form where a kernel needs it

    # ---- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other): return E.Add.apply(self, other)
    def __radd__(self, other): return E.Add.apply(other, self)
    def __sub__(self, other): return E.Sub.apply(self, other)
    def __rsub__(self, other): return E.Sub.apply(other, self)
    def __mul__(self, other): return E.Mul.apply(self, other)
    def __rmul__(self, other): return E.Mul.apply(other, self)
    def __truediv__(self, other): return E.Div.apply(self, other)
    def __rtruediv__(self, other): return E.Div.apply(other, self)
    def __pow__(self, exponent): return E.Pow.apply(self, exponent)
    def __rpow__(self, base): return E.Pow.apply(base, self)
    def pow(self, exponent): return E.Pow.apply(self, exponent)
    def __matmul__(self, other): return self.matmul(other)
    def __rmatmul__(self, other): return Tensor(other, dtype=self.dtype).matmul(self)
    def __neg__(self): return E.Neg.apply(self)
    def __pos__(self): return self

    def __lt__(self, other): return E.Compare.apply(self, other, "lt")
    def __le__(self, other): return E.Compare.apply(self, other, "le")
    def __gt__(self, other): return E.Compare.apply(self, other, "gt")
    def __ge__(self, other): return E.Compare.apply(self, other, "ge")
    def __eq__(self, other): return E.Compare.apply(self, other, "eq")
    def __ne__(self, other): return E.Compare.apply(self, other, "ne")
    __hash__ = object.__hash__  # tensors are dict keys by identity, as in PyTorch

    def __bool__(self):
        _read(self, "bool(tensor) (an `if` or `while` on a tensor)")
        if self.data.size != 1:
            raise RuntimeError(f"bool: the truth value of a tensor with {self.data.size} elements is "
                               f"ambiguous")
        return bool(self.item())

    def __float__(self):
        _read(self, "float(tensor)")
        return float(self.item())

    def __int__(self):
        _read(self, "int(tensor)")
        return int(self.item())

    def __invert__(self):
        if self.dtype != dtypes.bool_:
            raise TypeError(f"~: expected a bool tensor, got {self.dtype}")
        return E.Compare.apply(self, False, "eq")

    def __and__(self, other): return Tensor(self.data & getattr(other, "data", other))
    def __or__(self, other): return Tensor(self.data | getattr(other, "data", other))

    # ---- in place ------------------------------------------------------------------------------
    def add_(self, other, alpha=1):
        """self += alpha * other, in place (see ``_in_place``)."""
        return self._in_place(E.Add, other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        """self -= alpha * other, in place."""
        return self._in_place(E.Sub, other if alpha == 1 else other * alpha)

    def mul_(self, other):
        """self *= other, in place."""
        return self._in_place(E.Mul, other)

    def div_(self, other):
        """self /= other, in place."""
        return self._in_place(E.Div, other)

    def _in_place(self, op, other):
        """Overwrite this tensor's data with ``op(self, other)``. In-place ops are not recorded on
        the tape (an op that saved this tensor would then compute a wrong gradient), so while
        gradients are recorded they are refused when a tensor that requires grad takes part: on a
        leaf, as in PyTorch; elsewhere write ``x = x + other``."""
        from .autograd.grad_mode import is_grad_enabled
        name = op.op_name() + "_"
        if is_grad_enabled() and (self.requires_grad or getattr(other, "requires_grad", False)):
            if self.is_leaf and self.requires_grad:
                raise RuntimeError(f"{name}: a leaf tensor that requires grad can't be changed in place "
                                   f"while gradients are recorded; wrap the update in mf.no_grad()")
            raise RuntimeError(f"{name}: in-place ops are not recorded on the tape, and this one takes a "
                               f"tensor that requires grad; write x = x {op.symbol} other (recorded), or "
                               f"wrap it in mf.no_grad()")
        out = op.apply(self, other)
        if out.shape != self.shape:
            raise ValueError(f"{name}: the result's shape {out.shape} differs from this tensor's {self.shape} "
                             f"(only 'other' may broadcast)")
        if out.dtype != self.dtype and not (dtypes.is_floating(self.dtype) or out.dtype.kind == self.dtype.kind):
            raise TypeError(f"{name}: the result is {out.dtype}, which can't be stored in this {self.dtype} tensor")
        self.data[...] = out.data
        return self

    def matmul(self, other):
        if not isinstance(other, Tensor):
            other = Tensor(other, dtype=self.dtype)
        return L.MatMul.apply(self, other)

    def exp(self): return E.Exp.apply(self)
    def log(self): return E.Log.apply(self)
    def sqrt(self): return E.Sqrt.apply(self)
    def tanh(self): return E.Tanh.apply(self)
    def sigmoid(self): return E.Sigmoid.apply(self)
    def relu(self): return E.Relu.apply(self)
    def abs(self): return E.Abs.apply(self)
    def maximum(self, other): return E.Maximum.apply(self, other)
    def minimum(self, other): return E.Minimum.apply(self, other)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of 'min' and 'max' must be given")
        return E.Clamp.apply(self, min, max)

    clip = clamp

    def masked_fill(self, mask, value):
        """out = value where mask, else self (mask broadcasts)."""
        return E.Where.apply(mask, value, self)

    def softmax(self, dim): return N.Softmax.apply(self, dim)
    def log_softmax(self, dim): return N.LogSoftmax.apply(self, dim)

    # ---- reductions ----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False): return R.Sum.apply(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return R.Mean.apply(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, correction=1, unbiased=None):
        if unbiased is not None:
            correction = int(unbiased)
        return R.Var.apply(self, dim, keepdim, correction)

    def std(self, dim=None, keepdim=False, correction=1, unbiased=None):
        """sqrt(var): unbiased (``correction=1``) by default, as in PyTorch."""
        return self.var(dim, keepdim, correction, unbiased).sqrt()

    def amax(self, dim=None, keepdim=False): return R.Amax.apply(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return R.Amin.apply(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """Largest value: of all elements (``dim=None``), or along one ``dim`` as
        ``(values, indices)`` like PyTorch; a tuple of dims gives the values (as ``amax``)."""
        return self._extreme(R.Amax, "argmax", dim, keepdim)

    def min(self, dim=None, keepdim=False):
        """Smallest value; see ``max``."""
        return self._extreme(R.Amin, "argmin", dim, keepdim)

    def _extreme(self, op, arg, dim, keepdim):
        values = op.apply(self, dim, keepdim)
        if dim is None or isinstance(dim, (tuple, list)):
            return values
        (axis,) = normalize_dims(arg[3:], dim, self.ndim)
        idx = getattr(self.data, arg)(axis=axis)
        return ValuesIndices(values, Tensor(self.xp.expand_dims(idx, axis) if keepdim else idx))

    def argmax(self, dim=None, keepdim=False):
        return Tensor(self.data.argmax(axis=dim, keepdims=keepdim))

    def argmin(self, dim=None, keepdim=False):
        return Tensor(self.data.argmin(axis=dim, keepdims=keepdim))

    # ---- shape ----------------------------------------------------------------------------------
    def reshape(self, *shape): return S.Reshape.apply(self, S._shape_arg(shape))
    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:])

    def permute(self, *dims): return S.Permute.apply(self, S._shape_arg(dims))

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        (d0,), (d1,) = normalize_dims("transpose", dim0, self.ndim), normalize_dims("transpose", dim1, self.ndim)
        dims[d0], dims[d1] = dims[d1], dims[d0]
        return S.Permute.apply(self, tuple(dims))

    @property
    def T(self):
        return S.Permute.apply(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def expand(self, *shape): return S.Expand.apply(self, S._shape_arg(shape))

    def expand_as(self, other): return self.expand(other.shape)

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dims = normalize_dims("squeeze", dim, self.ndim)
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))

    def unsqueeze(self, dim):
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {self.ndim} "
                             f"dimensions")
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def __getitem__(self, key):
        if isinstance(key, Tensor) and not dtypes.is_floating(key.dtype) and key.dtype != dtypes.bool_:
            # the range check reads back to the host: skipped inside a CUDA-graph capture (see
            # nn.functional.embedding), where whoever captures checks the indices per replay
            if (key.numel() and not capturing(key.data)
                    and (int(key.data.min()) < -self.shape[0] or int(key.data.max()) >= self.shape[0])):
                raise IndexError(f"index: indices in [{int(key.data.min())}, {int(key.data.max())}] are out "
                                 f"of range for dim 0 of size {self.shape[0]}")
            return S.IndexSelect.apply(self, key)
        return S.Index.apply(self, _index_key(key))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def split(self, split_size_or_sections, dim=0):
        """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
        (dim,) = normalize_dims("split", dim, self.ndim)
        n = self.shape[dim]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step < 0 or (step == 0 and n):      # 0 only for an empty dim, as in PyTorch
                raise ValueError(f"split: split_size must be positive (0 only for a dim of size 0), got {step}")
            sizes = ([min(step, n - i) for i in range(0, n, step)] if step else []) or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sections {sizes} sum to {sum(sizes)}, but dim {dim} has size {n}")
        out, start = [], 0
        for size in sizes:
            key = (slice(None),) * dim + (slice(start, start + size),)
            out.append(self[key])
            start += size
        return tuple(out)

    def chunk(self, chunks, dim=0):
        """``chunks`` pieces (fewer if the size does not allow), each of ceil(size / chunks)."""
        if chunks <= 0:
            raise ValueError(f"chunk: chunks must be positive, got {chunks}")
        n = self.shape[dim]
        return self.split(max(-(-n // chunks), 1), dim)


def _index_key(key):
    """Tensor indices become arrays; everything else passes to NumPy's indexing unchanged."""
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, list):
        return np.asarray(key)
    return key
