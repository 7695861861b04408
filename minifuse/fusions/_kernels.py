"""The kernels behind the fused functions, per device: chosen once per call from the array type,
as the inference layers choose ``minifuse.kernels.cpu`` or ``minifuse.kernels.cuda``
(``nn.dispatch.fused_kernels``). Both sets have the same names and signatures (activation and
gate codes of ``minifuse.kernels.cpu.epilogue`` / ``glu``), so each ``Function`` runs one Python
code on the CPU and on CUDA; GEMMs go through the array module's matmul (NumPy's BLAS, or CuPy's
cuBLAS).

The CUDA set is imported on first use only: CPU use never imports CuPy or numba-cuda.
"""
import functools
from typing import Any, NamedTuple

import numpy as np

from ..device import array_module


class Kernels(NamedTuple):
    xp: Any              # numpy or cupy: allocations and matmuls
    training: Any        # bias_act_forward/backward, weighted_glu_forward, glu_backward,
                         # residual_layer_norm_forward/backward (kernels.{cpu,cuda}.training)
    attention: Any       # softmax_forward, softmax_backward (kernels.{cpu,cuda}.attention_training)
    bias_act_: Any       # (y, bias, code): y = act(y + bias) in place
    bias_glu: Any        # (y2, bias, gate_code, out2): out2 = gate(a) * b
    mask_add: Any        # (fn, key_mask, batch, keys, like): the additive key mask, on like's device


def kernels(a):
    """The kernels for raw arrays like ``a``: the CPU set for NumPy arrays, the CUDA set for CuPy."""
    return cpu() if array_module(a) is np else cuda()


@functools.lru_cache(maxsize=None)
def cpu():
    from ..kernels.cpu import attention_training, epilogue, glu, training
    from ..kernels.cpu.attention import _mask_add
    return Kernels(np, training, attention_training, epilogue.apply_bias_act, glu.apply_bias_glu,
                   lambda fn, key_mask, batch, keys, like: _mask_add(fn, key_mask, batch, keys, like.dtype))


@functools.lru_cache(maxsize=None)
def cuda():
    """The CUDA set; its array module is CuPy, or NumPy under the Numba CUDA simulator
    (NUMBA_ENABLE_CUDASIM=1), where tests/cuda run the same functions through it."""
    from ..kernels.cuda import attention_training, runtime, training
    if runtime.SIMULATOR:
        xp = np
    else:  # pragma: no cover - CUDA only
        import cupy as xp
    return Kernels(xp, training, attention_training, training.apply_bias_act, training.apply_bias_glu,
                   attention_training.mask_add)
