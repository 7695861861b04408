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

import numpy as np

from ..autograd.grad_mode import _GradMode, is_grad_enabled

__all__ = ["fusion_enabled", "set_fusion_enabled", "fusion", "use_fused", "fused_kernels",
           "attention_threshold", "fuse_attention", "fused_training_available"]

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


def fused_kernels(*tensors):
    """The kernel module for these tensors (``minifuse.kernels.cpu`` for NumPy arrays,
    ``minifuse.kernels.cuda`` for CuPy arrays) when the fused path applies, else None.

    ``tensors[0]`` is the layer input; the rest are its parameters (None allowed). The kernels
    take float32 and float64; other dtypes run unfused.
    """
    if not use_fused(*tensors):
        return None
    x = tensors[0]
    if x.dtype not in (np.float32, np.float64) or x.ndim == 0:
        return None
    return _kernel_package(x)


def _kernel_package(x):
    """``minifuse.kernels.cpu`` for NumPy data, ``minifuse.kernels.cuda`` for CuPy data (None
    when numba-cuda is missing)."""
    if x.xp is np:
        from ..kernels import cpu
        return cpu
    try:  # pragma: no cover - CUDA only
        from ..kernels import cuda
    except ImportError:
        return None
    return cuda


def fused_training_available(x):
    """True when the fused autograd functions (``minifuse.fusions``) can train on ``x``: fusion
    enabled, and the data on the CPU, or on CUDA with the CUDA kernels importable (numba-cuda,
    ``minifuse.kernels.cuda.training``); otherwise layers train through the taped ops."""
    return fusion_enabled() and _kernel_package(x) is not None


def inactive(dropout):
    """True when a dropout module does nothing now (eval mode, p = 0, or Identity)."""
    return not dropout.training or getattr(dropout, "p", 0.0) == 0.0


def data(t):
    """The array behind an optional tensor."""
    return None if t is None else t.data


def wrap(array):
    """A kernel's output as a Tensor with no history (fused paths never record)."""
    from ..tensor import Tensor
    return Tensor._from_op(array, None, 0)


# Negative: the loop kernel is never chosen by default (see attention_threshold).
DEFAULT_ATTENTION_THRESHOLD = -1


def attention_threshold():
    """MINIFUSE_FUSE_ATTN_THRESHOLD: the largest batch * seq for which the CPU attention runs as
    the row-blocked loop kernel (``method='loop'``); larger inputs run as batched BLAS products
    around one fused softmax kernel (``method='bmm'``). 0 = the loop kernel at every size; the
    default, -1 = never. Eager layers and the graph pass use the same rule.

    Measured on the 2-core CPU (`python -m minifuse.bench graph`, compiled 4-layer encoders,
    BENCHMARKS.md): since the softmax kernel vectorizes, 'bmm' is as fast or faster at every size
    from 1 to 1024 tokens (loop / bmm = 1.00-1.07 up to 32 tokens, 1.24-1.53 at 1024). Before, when
    the alternative was the taped softmax ops, the loop kernel won up to 64 tokens, the old default.
    """
    return int(os.environ.get("MINIFUSE_FUSE_ATTN_THRESHOLD", DEFAULT_ATTENTION_THRESHOLD))


def fuse_attention(batch, seq, x=None):
    """True when attention over ``batch`` sequences of ``seq`` tokens should be the loop kernel
    (``method='loop'``), False for batched products around a fused softmax (``'bmm'``).
    The threshold is the CPU's: on CUDA (``x`` a CuPy tensor) there is one implementation,
    batched cuBLAS GEMMs around one fused softmax, and the method is ignored."""
    if x is not None and x.xp is not np:
        return True
    limit = attention_threshold()
    return limit == 0 or batch * seq <= limit          # a negative limit: never
