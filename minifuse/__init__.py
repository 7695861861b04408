"""minifuse: a small, readable autograd framework on NumPy and Numba that shows, and measures,
what kernel fusion buys.

    import minifuse as mf
    x = mf.randn(3, 4, requires_grad=True)
    (x.tanh() * 2).sum().backward()
    x.grad
"""
# OpenBLAS's idle threads sleep at once instead of spinning beside the next Numba kernel, also in
# a NumPy loaded before minifuse (threads.quiet_idle_blas_threads; a user's own value wins).
from .threads import quiet_idle_blas_threads

quiet_idle_blas_threads()

# The kernels' vectors at the full AVX-512 width on Intel cores too (cpu_features.py): before
# anything is compiled, and not over a user's own NUMBA_CPU_FEATURES / NUMBA_CPU_NAME.
from .cpu_features import prefer_512_bit_vectors  # noqa: E402

prefer_512_bit_vectors()

from . import autograd, dtypes  # noqa: E402
from .autograd import (autocast, enable_grad, get_autocast_dtype, is_autocast_enabled, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .creation import (arange, empty, empty_like, eye, from_numpy, full, full_like, linspace, ones, ones_like,
                       rand, randint, randn, randn_like, tensor, zeros, zeros_like)
from .device import Device, cuda_available, device
from .dtypes import (bfloat16, bool_, float16, float32, float64, get_default_dtype, int32, int64,
                     set_default_dtype)
from .precision import get_float32_matmul_precision, set_float32_matmul_precision
from .functions import *  # noqa: F401,F403  (ops as functions: mf.exp, mf.cat, ...)
from .random import Generator, manual_seed
from .serialization import load, save
from .tensor import Tensor
from .threads import apply_environment as _apply_threads, get_num_threads, set_num_threads
from . import amp, graph  # noqa: E402  (after Tensor: they build on it)
from .graph import compile  # noqa: E402,A004
# every public subpackage is an attribute after `import minifuse`, as in PyTorch (mf.optim.AdamW)
from . import cuda, fusions, kernels, models, nn, ops, optim, utils  # noqa: E402

_apply_threads()   # MINIFUSE_NUM_THREADS, if set

__version__ = "0.1.0"
