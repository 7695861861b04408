"""Activations as CUDA device functions, one set per compute type.

float16 and float32 arrays compute in float32, float64 in float64. Constants are closed over as
NumPy scalars of the compute type, so a float32 kernel never widens to float64 (a bare `0.5`
literal would). `math.exp`, `math.erf` and `math.tanh` compile to CUDA's libdevice (expf, erff,
tanhf), which are accurate to a few ulp: no own polynomials are needed on the GPU.
"""
import functools
import math

import numpy as np

from .runtime import cuda

ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh")
GATES = ("sigmoid", "silu")   # glu, swiglu


def compute_dtype(dtype):
    """The NumPy dtype a kernel computes in for arrays of `dtype`."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


@functools.lru_cache(maxsize=None)
def activations(ct):
    """{name: device function act(x)} for compute dtype `ct` (np.float32 or np.float64)."""
    ct = np.dtype(ct).type
    zero, half, one, two = ct(0.0), ct(0.5), ct(1.0), ct(2.0)
    rsqrt2, c_tanh, k_tanh = ct(1 / math.sqrt(2.0)), ct(math.sqrt(2 / math.pi)), ct(0.044715)

    @cuda.jit(device=True, inline=True)
    def none(x):
        return x

    @cuda.jit(device=True, inline=True)
    def relu(x):
        return zero if x < zero else x              # as np.maximum(x, 0): NaN stays NaN

    @cuda.jit(device=True, inline=True)
    def sigmoid(x):
        # e^-|x| <= 1 never overflows (the CUDA simulator's Python math.exp would raise
        # where the GPU returns inf); NaN goes through both arms
        e = math.exp(-abs(x))
        return one / (one + e) if x >= zero else e / (one + e)

    @cuda.jit(device=True, inline=True)
    def silu(x):
        return x * sigmoid(x)

    @cuda.jit(device=True, inline=True)
    def gelu(x):
        return half * x * (one + math.erf(x * rsqrt2))

    @cuda.jit(device=True, inline=True)
    def gelu_tanh(x):
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u): one exp, no cancellation for negative u
        u = c_tanh * (x + k_tanh * x * x * x)
        return x * sigmoid(two * u)

    @cuda.jit(device=True, inline=True)
    def tanh(x):
        return math.tanh(x)

    return dict(none=none, relu=relu, gelu=gelu, gelu_tanh=gelu_tanh, silu=silu,
                sigmoid=sigmoid, tanh=tanh)
