"""The CUDA kernel backend: numba `@cuda.jit` kernels on CuPy arrays (NumPy arrays under the
Numba CUDA simulator, NUMBA_ENABLE_CUDASIM=1), float16, float32 and float64 (float16 computes in
float32), plus CUDA-graph capture and replay (`CudaGraph`).

GEMMs run in cuBLASLt / cuBLAS, written into their buffers; the kernels fuse what surrounds them.
Its entry points are those of every backend (`minifuse.kernels.registry.ENTRY_POINTS`): the same
names and signatures as `minifuse.kernels.cpu`, activations by name. See docs/cuda.md.
"""
import sys

from .. import compose
from .attention import (attend_packed, attention, attention_packed, mask_add, softmax_backward,
                        softmax_forward)
from .checks import CHECKS, DTYPES
from .elementwise import (apply_bias_act, apply_bias_glu, bias_act_, bias_act_backward, bias_glu,
                          glu_backward)
from .gemm import linear
from .graphs import CudaGraph
from .layernorm import apply_residual_layer_norm, residual_layer_norm, residual_layer_norm_backward
from .runtime import SIMULATOR

if SIMULATOR:
    import numpy as xp   # the array module of this backend: NumPy under the simulator
else:  # pragma: no cover - CUDA only
    import cupy as xp

linear_act, mlp, transformer_layer = compose.bind(sys.modules[__name__])

__all__ = ["xp", "CHECKS", "DTYPES", "CudaGraph", "SIMULATOR", "apply_bias_act", "apply_bias_glu",
           "apply_residual_layer_norm", "attend_packed", "attention", "attention_packed", "bias_act_",
           "bias_act_backward", "bias_glu", "glu_backward", "linear", "linear_act", "mask_add", "mlp",
           "residual_layer_norm", "residual_layer_norm_backward", "softmax_backward", "softmax_forward",
           "transformer_layer"]
