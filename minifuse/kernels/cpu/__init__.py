"""The CPU kernel backend: fused Numba kernels (@njit, cached, parallel over rows / heads) on
NumPy arrays of float32 or float64, all arrays of one call one dtype.

GEMMs run in NumPy's BLAS; the kernels fuse everything around them. Its entry points are those of
every backend (`minifuse.kernels.registry.ENTRY_POINTS`): the same names and signatures as
`minifuse.kernels.cuda`, activations by name. The checked ones validate their arguments in
Python first; the others (`apply_*`, `linear`, `attend_packed`, the training kernels) take
arguments already checked by their callers (`kernels.compose`, `minifuse.fusions`).

Threads: Numba's OpenMP workers and OpenBLAS's threads take turns on the same cores. With
GNU OpenMP's default (workers spin after each parallel region) the GEMM that follows a fused
kernel ran 2x slower; OMP_WAIT_POLICY=passive puts them to sleep instead. It is set here only
when the user has not set it, and it only takes effect if no OpenMP runtime is loaded yet.
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as xp  # noqa: E402  (the array module of this backend)

from .. import compose  # noqa: E402
from .attention import *  # noqa: E402,F401,F403  (each module's __all__: its entry points)
from .checks import CHECKS, DTYPES  # noqa: E402,F401
from .elementwise import *  # noqa: E402,F401,F403
from .gemm import *  # noqa: E402,F401,F403
from .layernorm import *  # noqa: E402,F401,F403
from .packing import *  # noqa: E402,F401,F403

# linear_act, mlp, transformer_layer and the packed ones: written once (kernels/compose.py) over this
# package's primitives
(linear_act, mlp, transformer_layer, pack, unpack, attention_varlen,
 transformer_layer_varlen) = compose.bind(sys.modules[__name__])
