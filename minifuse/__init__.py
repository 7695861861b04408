"""minifuse: a small, readable autograd framework on NumPy and Numba that shows, and measures,
what kernel fusion buys.

    import minifuse as mf
    x = mf.randn(3, 4, requires_grad=True)
    (x.tanh() * 2).sum().backward()
    x.grad
"""
import os

# After each GEMM, OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) before they sleep, and
# a parallel Numba kernel that follows then shares a core with a spinning thread (measured on the
# 2-core machine: a kernel after a GEMM ran at about half speed). 2^4 cycles makes them sleep at
# once: BERT-base layer training step 409 -> 374 ms, MiniLM encode 2.17-2.28 -> 2.05-2.11 s
# (BENCHMARKS.md). OpenBLAS reads the variable when NumPy loads it, so this takes effect only when
# minifuse is imported before NumPy (or when the shell sets it), and a value set by the user wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

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
