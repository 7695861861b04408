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
from .attention import (attend_packed, attention, attention_packed, mask_add, softmax_backward,  # noqa: E402
                        softmax_forward)
from .checks import CHECKS, DTYPES  # noqa: E402
from .elementwise import (apply_bias_act, apply_bias_glu, bias_act_, bias_act_backward, bias_glu,  # noqa: E402
                          glu_backward)
from .gemm import linear  # noqa: E402
from .layernorm import apply_residual_layer_norm, residual_layer_norm, residual_layer_norm_backward  # noqa: E402

linear_act, mlp, transformer_layer = compose.bind(sys.modules[__name__])

__all__ = ["xp", "CHECKS", "DTYPES", "apply_bias_act", "apply_bias_glu", "apply_residual_layer_norm",
           "attend_packed", "attention", "attention_packed", "bias_act_", "bias_act_backward", "bias_glu",
           "glu_backward", "linear", "linear_act", "mask_add", "mlp", "residual_layer_norm",
           "residual_layer_norm_backward", "softmax_backward", "softmax_forward", "transformer_layer"]
