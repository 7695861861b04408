"""minifuse: a small, readable autograd framework on NumPy and Numba that shows, and measures,
what kernel fusion buys.

    import minifuse as mf
    x = mf.randn(3, 4, requires_grad=True)
    (x.tanh() * 2).sum().backward()
    x.grad
"""
from . import autograd, dtypes
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (arange, empty, empty_like, eye, from_numpy, full, full_like, ones, ones_like,
                       rand, randn, randn_like, tensor, zeros, zeros_like)
from .device import Device, cuda_available, device
from .dtypes import (bool_, float16, float32, float64, get_default_dtype, int32, int64,
                     set_default_dtype)
from .functions import *  # noqa: F401,F403  (ops as functions: mf.exp, mf.cat, ...)
from .random import manual_seed
from .serialization import load, save
from .tensor import Tensor
from . import graph  # noqa: E402  (after Tensor: graph builds on it)
from .graph import compile  # noqa: E402,A004

__version__ = "0.1.0"
