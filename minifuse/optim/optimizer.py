"""``Optimizer``: parameter groups, per-parameter state, zero_grad and state_dict.

Subclasses write ``_update(p, grad, state, group)``, which changes ``p.data`` in place; nothing
an optimizer does is recorded on the tape.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import dtypes
from ..autograd import no_grad
from ..device import to_device
from ..tensor import Tensor

__all__ = ["Optimizer"]


class Optimizer:
    """Base class. ``params``: an iterable of tensors, or of dicts ``{'params': [...], 'lr': ...}``
    (parameter groups, each overriding ``defaults``)."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups, self.state = [], {}
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        group = dict(group)
        group["params"] = list(group["params"])
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad or not p.is_leaf:
                raise TypeError(f"{type(self).__name__}: can only optimize leaf tensors that require grad")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self):
        """One update of every parameter that has a gradient."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, p.grad.data, self.state.setdefault(p, {}), group)

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{..., 'params': [indices]}]}, with
        parameters numbered in group order (PyTorch's layout). Arrays are copies, on the parameters'
        device."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {index[id(p)]: {k: (v.copy() if hasattr(v, "shape") else v) for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore from ``state_dict()`` (also one saved with ``mf.save`` and read back with
        ``mf.load``, whose arrays are Tensors); the groups must hold the same numbers of
        parameters. Everything is converted before the optimizer changes."""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved groups hold "
                             f"{[len(g['params']) for g in groups]} parameters, this optimizer's "
                             f"{[len(g['params']) for g in self.param_groups]}")
        params = {i: p for g_saved, g in zip(groups, self.param_groups) for i, p in zip(g_saved["params"], g["params"])}
        new_state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            new_state[p] = {k: (to_device(_array(v, p.dtype, f"state[{i}][{k!r}]"), p.device)
                                if hasattr(v, "shape") else v) for k, v in s.items()}
        for g_saved, g in zip(groups, self.param_groups):
            g.update({k: copy.deepcopy(v) for k, v in g_saved.items() if k != "params"})
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _array(v, dtype, what):
    """A saved state array (NumPy, CuPy or Tensor) as a fresh NumPy array of ``dtype``."""
    a = v.__array__() if isinstance(v, Tensor) else (v.get() if hasattr(v, "get") else np.asarray(v))
    return np.array(dtypes.cast_exactly(a, dtype, what), copy=True)
