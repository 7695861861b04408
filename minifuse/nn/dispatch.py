"""When do layers run fused kernels? One rule, in one place.

A layer runs its fused inference kernel when fusion is enabled and no gradient is being
recorded for its inputs or parameters (grad mode off, or nothing requires grad). Otherwise it
records the unfused taped ops, so gradients stay exact.

Fusion is enabled unless ``MINIFUSE_DISABLE_FUSION=1`` is set in the environment (read at each
call, not at import) or a ``fusion(False)`` block / ``set_fusion_enabled(False)`` says otherwise.
"""
from __future__ import annotations

import os
import threading

from ..autograd.grad_mode import _GradMode, is_grad_enabled

__all__ = ["fusion_enabled", "set_fusion_enabled", "fusion", "use_fused"]

_state = threading.local()


def fusion_enabled() -> bool:
    forced = getattr(_state, "forced", None)
    if forced is not None:
        return forced
    return os.environ.get("MINIFUSE_DISABLE_FUSION", "0") in ("", "0")


def set_fusion_enabled(flag):
    """Force fusion on (True) or off (False) in this thread; None returns to the environment's say."""
    _state.forced = None if flag is None else bool(flag)


class fusion(_GradMode):
    """``with mf.nn.fusion(False):`` runs the block unfused (also a decorator); restores on exit."""

    def __init__(self, enabled=True):
        super().__init__()
        self.enabled = bool(enabled)

    def __enter__(self):
        self._prev.append(getattr(_state, "forced", None))
        _state.forced = self.enabled
        return self

    def __exit__(self, *exc):
        _state.forced = self._prev.pop()
        return False

    def _clone(self):
        return fusion(self.enabled)


def use_fused(*tensors) -> bool:
    """True when a layer should take its fused inference path for these inputs and parameters."""
    if not fusion_enabled():
        return False
    if not is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)
