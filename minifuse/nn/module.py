"""``Module`` and ``Parameter``: how layers hold their weights and find each other.

A Module keeps three ordered registries, filled by plain attribute assignment (``self.w = ...``)
as in PyTorch: parameters (trainable tensors), buffers (state that is saved but not trained) and
child modules. Everything else (``parameters()``, ``state_dict()``, ``to()``, ``repr``) walks them.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import dtypes
from ..autograd.autocast import dtype_for
from ..device import Device, to_device
from ..tensor import Tensor

__all__ = ["Module", "Parameter", "check_input"]


class Parameter(Tensor):
    """A Tensor that a Module trains: a leaf that requires grad (unless told otherwise)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data)
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def check_input(layer, x, last_dim=None, dtype=None, name="input"):
    """Raise a clear error when ``x`` is not a Tensor, its last dim is not ``last_dim``
    or its dtype is not ``dtype`` (the layer's weight dtype)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer}: argument '{name}' must be a Tensor, got {type(x).__name__}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{layer}: argument '{name}' must have last dimension {last_dim}, got shape "
                         f"{x.shape}")
    if dtype is not None and x.dtype != dtype and not _autocast_mixes(x, dtype):
        raise TypeError(f"{layer}: argument '{name}' must be {dtype} (the layer's dtype), got {x.dtype}; "
                        f"convert with .to({dtype}) or the layer with .to({x.dtype})")


def _autocast_mixes(x, dtype):
    """Under ``mf.autocast`` float layers take float inputs of another precision (the ops cast)."""
    return dtype_for(x) is not None and dtypes.is_floating(x.dtype) and dtypes.is_floating(dtype)


class Module:
    """Base class of all layers. Subclasses set attributes in ``__init__`` and define ``forward``."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist already
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration by assignment --------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning "
                                 f"attributes")
        was_param, was_buffer = name in self._parameters, name in self._buffers
        if was_param and not (value is None or isinstance(value, Parameter)):
            raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} to parameter "
                            f"'{name}' (a Parameter or None is expected)")
        self._forget(name)
        if isinstance(value, Parameter) or (value is None and was_param):
            self._parameters[name] = value  # None: an absent optional weight, e.g. bias=False
        elif isinstance(value, Module):
            self._modules[name] = value
        elif was_buffer:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for registry in (self._parameters, self._buffers, self._modules, self.__dict__):
            registry.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(registry)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None for an absent optional weight)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: '{name}' must be a Parameter or None, got "
                            f"{type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is part of the state (moved by ``to``, saved unless not persistent) but
        is not trained, e.g. BERT's position ids."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: '{name}' must be a Tensor or None, got {type(tensor).__name__}")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    # ---- walking the tree ----------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module and every descendant, depth first, each once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((k, m) for k, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def _named(self, registry):
        seen = set()
        for mname, m in self.named_modules():
            for k, t in getattr(m, registry).items():
                if t is None or id(t) in seen:
                    continue  # shared (tied) tensors appear once
                seen.add(id(t))
                yield (f"{mname}.{k}" if mname else k), t

    def named_parameters(self):
        return self._named("_parameters")

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named("_buffers")

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def get_submodule(self, target):
        m = self
        for part in target.split(".") if target else ():
            if part not in m._modules:
                raise AttributeError(f"get_submodule: {type(m).__name__} has no submodule '{part}' "
                                     f"(in '{target}')")
            m = m._modules[part]
        return m

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant, then on self (as PyTorch); returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients -------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """name -> Tensor for every parameter and persistent buffer. The tensors share memory
        with the module (as in PyTorch): copy them if you change the module afterwards."""
        out = OrderedDict()
        for mname, m in self.named_modules():
            items = list(m._parameters.items()) + [(k, b) for k, b in m._buffers.items()
                                                   if k not in m._non_persistent]
            for k, t in items:
                if t is not None:
                    out[f"{mname}.{k}" if mname else k] = t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy tensors from ``state_dict`` into this module's parameters and buffers.

        All or nothing: every key, shape and value is checked and converted (to each parameter's
        dtype and device) BEFORE anything is assigned, so a failed load leaves the module
        untouched. ``strict=False`` ignores missing and unexpected keys (never wrong shapes).
        Casts that lose values (None, complex to real, overflow to inf, non-integers into an
        integer buffer) are errors, rounding to a narrower float is not. Returns (missing,
        unexpected)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            errors.append(f"unexpected keys: {', '.join(unexpected)}")
        arrays = {}
        for k, v in state_dict.items():
            if k not in own:
                continue
            arr = v.__array__() if isinstance(v, Tensor) else np.asarray(v)
            if tuple(arr.shape) != own[k].shape:
                errors.append(f"'{k}' has shape {tuple(arr.shape)} in the state dict, but the module "
                              f"expects {own[k].shape}")
                continue
            try:
                arrays[k] = to_device(dtypes.cast_exactly(arr, own[k].dtype, f"'{k}'"), own[k].device)
            except ValueError as e:
                errors.append(str(e))
        if errors:
            raise RuntimeError(f"load_state_dict of {type(self).__name__}: " + "; ".join(errors))
        for k, arr in arrays.items():
            own[k].data[...] = arr  # detach() shares memory with the parameter, so this writes it
        return missing, unexpected

    def to(self, *args, dtype=None, device=None):
        """Move/convert every parameter and buffer in place (floating ones only change dtype);
        the Parameter objects stay the same, so an optimizer built before still holds them."""
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        dtype = dtypes.as_dtype(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            arr = t.data
            if device is not None:
                arr = to_device(arr, Device(device))
            if dtype is not None and dtypes.is_floating(arr.dtype):
                arr = arr.astype(dtype, copy=False)
            t.data = arr
            if t.grad is not None:
                t.grad = None  # a gradient of another dtype/device would not fit
        return self

    def double(self):
        return self.to(dtypes.float64)

    def float(self):
        return self.to(dtypes.float32)

    # ---- printing ------------------------------------------------------------------------------
    def extra_repr(self):
        """The layer's configuration, shown inside its repr (override in subclasses)."""
        return ""

    def __repr__(self):
        lines = [line for line in self.extra_repr().split("\n") if line]
        for k, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"({k}): {child}")
        name = type(self).__name__
        if not self._modules:
            return f"{name}({self.extra_repr()})"
        return name + "(\n  " + "\n  ".join(lines) + "\n)"
