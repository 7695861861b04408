"""The CUDA kernel backend: numba `@cuda.jit` kernels on CuPy arrays (NumPy arrays under the
Numba CUDA simulator, NUMBA_ENABLE_CUDASIM=1), float16, bfloat16 (with ml_dtypes), float32 and
float64 (the half dtypes compute in float32; storage.py: how each dtype is loaded and stored),
plus CUDA-graph capture and replay (`CudaGraph`).

GEMMs run in cuBLASLt / cuBLAS, written into their buffers; the kernels fuse what surrounds them.
Its entry points are those of every backend (`minifuse.kernels.registry.ENTRY_POINTS`): the same
names and signatures as `minifuse.kernels.cpu`, activations by name. See docs/cuda.md.
"""
import sys

from .. import compose
from .attention import *  # noqa: F401,F403  (each module's __all__: its entry points)
from .checks import CHECKS, DTYPES  # noqa: F401
from .elementwise import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .graphs import CudaGraph  # noqa: F401
from .layernorm import *  # noqa: F401,F403
from .packing import *  # noqa: F401,F403
from .replay import layer_signature, linear_signature, replayable, varlen_signature
from .runtime import SIMULATOR

if SIMULATOR:
    import numpy as xp   # the array module of this backend: NumPy under the simulator
else:  # pragma: no cover - CUDA only
    import cupy as xp

# linear_act, mlp, transformer_layer and the packed ones: written once (kernels/compose.py) over this
# package's primitives
(linear_act, mlp, transformer_layer, pack, unpack, attention_varlen,
 transformer_layer_varlen) = compose.bind(sys.modules[__name__])
# the layers' and linear_act's eager calls replay their recorded launches (replay.py; not under the simulator)
linear_act = replayable(linear_act, linear_signature)
transformer_layer = replayable(transformer_layer, layer_signature)
transformer_layer_varlen = replayable(transformer_layer_varlen, varlen_signature)
