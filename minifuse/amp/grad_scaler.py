"""Dynamic loss scaling (PyTorch's ``torch.amp.GradScaler``), for training with half-precision
activations: small gradients that would underflow in float16 are kept representable by scaling the
loss up before ``backward`` and the gradients down before the optimizer's step.

    scaler = mf.amp.GradScaler()
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()     # gradients of loss * scale
        scaler.step(opt)                  # unscale; skip the step if any gradient is Inf/NaN
        scaler.update()                   # halve the scale after a skipped step, double it after
                                          # growth_interval good steps in a row

The scale is a power of two by default, so scaling and unscaling are exact in binary floating
point: with no overflow, a scaled step equals the unscaled one bit for bit. Gradients must not be
float16 themselves (the parameters they belong to are the float32 master weights), as in PyTorch.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor

__all__ = ["GradScaler"]


def _positive(name, value, above=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= above:
        raise ValueError(f"GradScaler: '{name}' must be a finite number > {above:g}, got {value!r}")
    return float(value)


class GradScaler:
    """Loss scaling with a dynamic scale: ``init_scale`` to start, times ``backoff_factor`` after a
    step whose gradients hold an Inf or NaN (that step is skipped), times ``growth_factor`` after
    ``growth_interval`` steps in a row without. ``enabled=False`` makes every method a pass-through.
    ``device`` is accepted for PyTorch's signature; the scaler follows the gradients' device."""

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self.device = device
        self._enabled = bool(enabled)
        self._scale = _positive("init_scale", init_scale)
        self._growth_factor = _positive("growth_factor", growth_factor, above=1.0)
        self._backoff_factor = _positive("backoff_factor", backoff_factor)
        if self._backoff_factor >= 1.0:
            raise ValueError(f"GradScaler: 'backoff_factor' must be < 1, got {backoff_factor!r}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"GradScaler: 'growth_interval' must be a positive int, got {growth_interval!r}")
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer = {}          # id(optimizer) -> {"unscaled": bool, "found_inf": bool, "stepped": bool}

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The current scale (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def scale(self, outputs):
        """``outputs`` (a Tensor, or a list/tuple of them) times the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: 'outputs' must be a Tensor or a list/tuple of Tensors, got "
                        f"{type(outputs).__name__}")

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": False,
                                                             "stepped": False})

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale, in place, and note whether any is Inf/NaN.
        Call it before looking at the true gradients (e.g. clipping); ``step`` then does not unscale
        again. Once per optimizer between two ``update`` calls."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["unscaled"]:
            raise RuntimeError("GradScaler.unscale_: already called on this optimizer since the last update()")
        if state["stepped"]:
            raise RuntimeError("GradScaler.unscale_: called after step(); call update() first")
        inv = 1.0 / self._scale
        found_inf = False
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.data
                    if g.dtype == np.float16:
                        raise ValueError("GradScaler.unscale_: float16 gradients cannot be unscaled (keep the "
                                         "parameters in float32 and run float16 activations)")
                    g *= g.dtype.type(inv)
                    found_inf = found_inf or not bool(p.grad.xp.isfinite(g).all())
        state["unscaled"], state["found_inf"] = True, found_inf

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless ``unscale_`` already did) and run ``optimizer.step()`` unless a gradient
        is Inf or NaN; returns what ``step`` returned, or None for a skipped step."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        state = self._state(optimizer)
        if state["stepped"]:
            raise RuntimeError("GradScaler.step: already called on this optimizer since the last update()")
        if not state["unscaled"]:
            self.unscale_(optimizer)
        state["stepped"] = True
        if state["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """Set the scale for the next iteration: ``new_scale`` if given, else backoff after a step
        with Inf/NaN gradients (in any optimizer), growth after ``growth_interval`` good steps."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = _positive("new_scale", new_scale)
            self._growth_tracker = 0
        elif self._per_optimizer:
            if any(s["found_inf"] for s in self._per_optimizer.values()):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def state_dict(self):
        """PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state_dict)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing {sorted(missing)}")
        scale = _positive("scale", state_dict["scale"])
        growth = _positive("growth_factor", state_dict["growth_factor"], above=1.0)
        backoff = _positive("backoff_factor", state_dict["backoff_factor"])
        interval, tracker = state_dict["growth_interval"], state_dict["_growth_tracker"]
        if not isinstance(interval, int) or interval < 1 or not isinstance(tracker, int) or not 0 <= tracker < interval:
            raise ValueError(f"GradScaler.load_state_dict: bad growth_interval / _growth_tracker "
                             f"({interval!r}, {tracker!r})")
        self._scale, self._growth_factor, self._backoff_factor = scale, growth, backoff
        self._growth_interval, self._growth_tracker = interval, tracker
