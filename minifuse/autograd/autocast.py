"""Automatic mixed precision (PyTorch's ``torch.autocast``): inside ``with mf.autocast("cuda"):``
(or ``"cpu"``) each op on tensors of that device runs in the precision its class asks for:

- ``autocast = "lower"`` (matrix products: ``MatMul``, and ``F.linear`` with its bias): float32
  inputs are cast to the autocast dtype (float16), so the GEMMs run in half precision;
- ``autocast = "float32"`` (softmax, log-softmax, LayerNorm, exp, log, pow, sum, mean, var: the
  ops whose range or accumulation needs it): half-precision inputs are cast to float32;
- ``autocast = "promote"`` (the binary elementwise ops, ``where``, ``cat``): operands of different
  float dtypes are cast to the widest (outside autocast minifuse refuses mixed dtypes);
- every other op runs in its inputs' dtype.

Casts are recorded ops (``Cast``), so gradients flow back to the float32 parameters in float32:
the parameters stay the float32 master weights. Layers run their taped ops under autocast (the
fused kernels and fused training functions keep their own dtypes). Pair it with
``mf.amp.GradScaler`` for float16 training. The state is per thread.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from ..dtypes import HALF, is_floating

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype"]

DEVICE_TYPES = ("cpu", "cuda")
DTYPES = HALF                             # the lower precisions autocast can run in (float16, bfloat16)
_FLOAT32 = np.dtype(np.float32)


class _State(threading.local):
    def __init__(self):
        self.dtypes = {}                  # device type -> the autocast dtype while enabled


_state = _State()


class autocast:
    """``with mf.autocast(device_type, dtype=mf.float16, enabled=True):`` (also a decorator)."""

    def __init__(self, device_type, dtype=None, enabled=True):
        if device_type not in DEVICE_TYPES:
            raise ValueError(f"autocast: 'device_type' must be one of {DEVICE_TYPES}, got {device_type!r}")
        dtype = HALF[0] if dtype is None else np.dtype(dtype)
        if dtype not in DTYPES:
            raise ValueError(f"autocast: 'dtype' must be one of {[str(d) for d in DTYPES]}, got {dtype}")
        self.device_type, self.dtype, self.enabled = device_type, dtype, bool(enabled)
        self._prev = []

    def __enter__(self):
        self._prev.append(_state.dtypes.get(self.device_type))
        if self.enabled:
            _state.dtypes[self.device_type] = self.dtype
        else:
            _state.dtypes.pop(self.device_type, None)
        return self

    def __exit__(self, *exc):
        prev = self._prev.pop()
        if prev is None:
            _state.dtypes.pop(self.device_type, None)
        else:
            _state.dtypes[self.device_type] = prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.dtype, self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def is_autocast_enabled(device_type="cuda"):
    return device_type in _state.dtypes


def get_autocast_dtype(device_type="cuda"):
    """The dtype autocast runs the lower-precision ops in on ``device_type`` (None when off)."""
    return _state.dtypes.get(device_type)


def dtype_for(tensor):
    """The autocast dtype for ops on ``tensor``'s device, or None (autocast off there)."""
    if not _state.dtypes:
        return None
    return _state.dtypes.get(tensor.device.type)


def cast_inputs(policy, args):
    """``args`` with their Tensor arguments cast by an op's ``autocast`` policy."""
    from ..ops.elementwise import Cast
    from ..tensor import Tensor
    tensors = [a for a in args if isinstance(a, Tensor) and is_floating(a.dtype)]
    if not tensors:
        return args
    lower = dtype_for(tensors[0])
    if lower is None or policy is None:
        return args
    if policy == "lower":
        target = {_FLOAT32: lower}
    elif policy == "float32":
        target = {lower: _FLOAT32}
    else:                                              # promote: everything to the widest float
        widest = max((t.dtype for t in tensors), key=lambda d: d.itemsize)
        target = {t.dtype: widest for t in tensors if t.dtype != widest}
    if not any(t.dtype in target for t in tensors):
        return args
    return tuple(Cast.apply(a, target[a.dtype]) if isinstance(a, Tensor) and a.dtype in target else a
                 for a in args)
