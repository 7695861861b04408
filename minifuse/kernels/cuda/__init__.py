"""Fused CUDA kernels on CuPy arrays: the same entry points and signatures as
`minifuse.kernels.cpu`, plus a one-kernel tiled GEMM for comparison and CUDA-graph replay.

GEMMs run in cuBLAS (through CuPy, written into their buffers with `out=`); numba `@cuda.jit`
kernels fuse what surrounds them. float16, float32 and float64 (float16 computes in float32).
Under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same kernels take NumPy arrays.
See docs/cuda.md.
"""
from .attention import attention, attention_packed
from .elementwise import bias_act_, bias_glu
from .graphs import CudaGraph
from .layers import linear_act, mlp, transformer_layer
from .mathfn import ACTIVATIONS
from .rowwise import residual_layer_norm
from .runtime import SIMULATOR
from .tiled_gemm import tiled_linear_act

__all__ = ["ACTIVATIONS", "CudaGraph", "SIMULATOR", "attention", "attention_packed", "bias_act_",
           "bias_glu", "linear_act", "mlp", "residual_layer_norm", "tiled_linear_act",
           "transformer_layer"]
