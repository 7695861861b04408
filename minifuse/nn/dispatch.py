"""When do layers run fused kernels? One rule, in one place, and the settings it reads.

A layer runs its fused inference kernel when fusion is enabled, no gradient is being recorded
for its inputs or parameters (grad mode off, or nothing requires grad), ``mf.autocast`` is off for
its device, and the kernel backend of its input's array type (``minifuse.kernels.registry``)
takes the input's dtype. Otherwise it
records the unfused taped ops, so gradients stay exact.

Settings live in thread-local state, each with a setter; the environment sets their defaults,
read once when minifuse is imported:

    fusion enabled          MINIFUSE_DISABLE_FUSION=1 turns it off    set_fusion_enabled / fusion(...)
    attention threshold     MINIFUSE_FUSE_ATTN_THRESHOLD (default -1)  set_attention_threshold
    packing enabled         MINIFUSE_DISABLE_PACKING=1 turns it off   set_packing_enabled / packing(...)
    packing threshold       MINIFUSE_PACKING_THRESHOLD (default 0)    set_packing_threshold

Packing (docs/packing.md): with a key-padding mask, fused inference of the transformer layers
and of MultiHeadAttention runs on the real tokens only (packed rows, attention per sequence)
when the fraction of padded positions in the batch is above the packing threshold; the padded
path computes the same real-token outputs (and zeros at padded positions) at full cost.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..autograd.autocast import dtype_for
from ..autograd.grad_mode import _GradMode, is_grad_enabled
from ..kernels import registry
from ..kernels.checks import capturing
from ..threads import get_num_threads

__all__ = ["fusion_enabled", "set_fusion_enabled", "fusion", "use_fused", "fused_kernels",
           "attention_threshold", "set_attention_threshold", "attention_method", "packed_attention_method",
           "training_kernels",
           "packed_mask", "packing_enabled", "set_packing_enabled", "packing", "packing_threshold",
           "set_packing_threshold"]

# The defaults, from the environment at import. A negative threshold: the loop kernel is never
# chosen (see attention_threshold).
def _threshold(fn, value):
    """An attention threshold: an int (a bool or a non-integral value is refused)."""
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: the attention threshold must be an integer (batch * seq; 0 = always the "
                         f"loop kernel, negative = never), got {value!r}") from None


def _fraction(fn, value):
    """A packing threshold: a fraction of padded positions in [0, 1)."""
    try:
        if isinstance(value, bool) or not 0 <= float(value) < 1:
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: the packing threshold must be a fraction of padded positions in [0, 1), "
                         f"got {value!r}") from None


DEFAULT_FUSION = os.environ.get("MINIFUSE_DISABLE_FUSION", "0") in ("", "0")
DEFAULT_PACKING = os.environ.get("MINIFUSE_DISABLE_PACKING", "0") in ("", "0")
# 0: pack whenever there is padding. Packing costs one gather and one scatter of the rows (about
# 0.5 ms for 2048 x 384 float32 on the CPU, under 1% of a MiniLM layer); see BENCHMARKS.md.
DEFAULT_PACKING_THRESHOLD = _fraction("MINIFUSE_PACKING_THRESHOLD",
                                      os.environ.get("MINIFUSE_PACKING_THRESHOLD", "0"))
DEFAULT_ATTENTION_THRESHOLD = _threshold("MINIFUSE_FUSE_ATTN_THRESHOLD",
                                         os.environ.get("MINIFUSE_FUSE_ATTN_THRESHOLD", "-1"))


class _Settings(threading.local):
    def __init__(self):
        self.fusion = DEFAULT_FUSION
        self.attention_threshold = DEFAULT_ATTENTION_THRESHOLD
        self.packing = DEFAULT_PACKING
        self.packing_threshold = DEFAULT_PACKING_THRESHOLD


_state = _Settings()


def fusion_enabled() -> bool:
    return _state.fusion


def set_fusion_enabled(flag):
    """Turn fusion on (True) or off (False) in this thread; None restores the default."""
    _state.fusion = DEFAULT_FUSION if flag is None else bool(flag)


class fusion(_GradMode):
    """``with mf.nn.fusion(False):`` runs the block unfused (also a decorator); restores on exit."""
    _setting = "fusion"

    def __init__(self, enabled=True):
        super().__init__()
        self.enabled = bool(enabled)

    def __enter__(self):
        self._prev.append(getattr(_state, self._setting))
        setattr(_state, self._setting, self.enabled)
        return self

    def __exit__(self, *exc):
        setattr(_state, self._setting, self._prev.pop())
        return False

    def _clone(self):
        return type(self)(self.enabled)


class packing(fusion):
    """``with mf.nn.packing(False):`` runs the block's fused layers on the padded batch (also a
    decorator); restores on exit."""
    _setting = "packing"


def packed_mask(x, key_mask):
    """The key mask (B, S) as a host array when a fused layer on array ``x`` runs packed: packing
    on, a mask whose fraction of padded positions is above ``packing_threshold()``, and no CUDA
    graph being captured (the offsets are computed on the host). Else None: the padded path.
    Eager layers and the graph's fused nodes use this same rule."""
    if key_mask is None or not _state.packing or capturing(x):
        return None
    host = key_mask if isinstance(key_mask, np.ndarray) else key_mask.get()
    if host.size == 0 or 1.0 - np.count_nonzero(host) / host.size <= _state.packing_threshold:
        return None
    return host


def packing_enabled() -> bool:
    return _state.packing


def set_packing_enabled(flag):
    """Turn packing on (True) or off (False) in this thread; None restores the default."""
    _state.packing = DEFAULT_PACKING if flag is None else bool(flag)


def packing_threshold():
    """Fused layers pack a batch whose fraction of padded positions is above this (default 0:
    any padding)."""
    return _state.packing_threshold


def set_packing_threshold(fraction):
    """Set ``packing_threshold()`` in this thread (a fraction in [0, 1)); None restores the default."""
    _state.packing_threshold = (DEFAULT_PACKING_THRESHOLD if fraction is None
                                else _fraction("set_packing_threshold", fraction))


def use_fused(*tensors) -> bool:
    """True when fused inference applies to these inputs and parameters (None allowed): fusion
    enabled and no gradient recorded for any of them."""
    if not _state.fusion:
        return False
    if not is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)


def fused_kernels(x, params=()):
    """The kernel package (``minifuse.kernels.cpu``, ``minifuse.kernels.cuda``, ...) that runs a
    layer's fused inference for input ``x`` and its parameters ``params``, or None: take the
    taped path."""
    if not use_fused(x, *params) or x.ndim == 0 or dtype_for(x) is not None:   # autocast: the taped ops
        return None
    backend = registry.for_array(x.data)
    if backend is None or x.dtype not in backend.dtypes:
        return None
    return backend.kernels


def training_kernels(x):
    """The kernel package whose fused training functions (``minifuse.fusions``) run on ``x``, or
    None (fusion off, no backend here for its arrays, or a dtype its kernels do not take: x's, or
    under ``mf.autocast`` the autocast dtype, which the fused functions then cast to): layers
    then train through the taped ops."""
    if not _state.fusion:
        return None
    backend = registry.for_array(x.data)
    if backend is None or x.dtype not in backend.dtypes or (dtype_for(x) or x.dtype) not in backend.dtypes:
        return None
    return backend.kernels


def attention_threshold():
    """The largest batch * seq for which the CPU attention runs as the row-blocked loop kernel
    (``method='loop'``); larger inputs run as batched BLAS products around one fused softmax
    kernel (``method='bmm'``). 0 = the loop kernel at every size; negative (the default, -1) =
    never. Eager layers and the graph pass use the same rule. Since the softmax kernel vectorizes,
    'bmm' is as fast or faster at every size measured (BENCHMARKS.md, the attention sweep)."""
    return _state.attention_threshold


def set_attention_threshold(limit):
    """Set ``attention_threshold()`` in this thread (an int); None restores the default."""
    _state.attention_threshold = (DEFAULT_ATTENTION_THRESHOLD if limit is None
                                  else _threshold("set_attention_threshold", limit))


def attention_method(batch, seq):
    """'loop' or 'bmm' for attention over ``batch`` sequences of ``seq`` tokens (a backend with
    one implementation, CUDA, takes either)."""
    limit = _state.attention_threshold
    return "loop" if limit == 0 or (limit > 0 and batch * seq <= limit) else "bmm"


# The head dim for which attention over packed rows runs as the loop kernel whatever the
# threshold: there (MiniLM's 32) its register-blocked form beats the per-sequence products at
# every length measured; at BERT-base's 64 the products are faster on 2 threads (BENCHMARKS.md).
PACKED_LOOP_HEAD_DIM = 32
# 'bmm' over packed rows is one task per sequence: with more than 2 threads it keeps them busy
# only from this many sequences per thread on; below that the loop kernel, which cuts the work
# into equal shares per thread, is faster (16-core Xeon, BERT-base heads: 2-3x at 16 threads,
# B = 4-64; BENCHMARKS.md).
PACKED_BMM_SEQUENCES_PER_THREAD = 8


def packed_attention_method(head_dim, method, batch=None):
    """The method for attention over packed rows (``attend_varlen``) of ``batch`` sequences with
    heads of ``head_dim``: 'loop' for `PACKED_LOOP_HEAD_DIM`; 'loop' for a 'bmm' ``method``
    when more than 2 threads run and ``batch`` gives them fewer than
    `PACKED_BMM_SEQUENCES_PER_THREAD` sequences each; else ``method`` (`attention_method`'s
    choice for the batch). ``batch`` None: no thread rule."""
    if head_dim == PACKED_LOOP_HEAD_DIM:
        return "loop"
    threads = get_num_threads()
    few = batch is not None and threads > 2 and batch < PACKED_BMM_SEQUENCES_PER_THREAD * threads
    return "loop" if method == "bmm" and few else method
