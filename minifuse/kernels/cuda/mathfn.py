"""Activations as CUDA device functions, one set per compute type.

float16, bfloat16 and float32 arrays compute in float32, float64 in float64 (storage.py converts
each array's elements to and from the compute dtype). Constants are closed over as
NumPy scalars of the compute type, so a float32 kernel never widens to float64 (a bare `0.5`
literal would). `math.exp`, `math.erf` and `math.tanh` compile to CUDA's libdevice (expf, erff,
tanhf), which are accurate to a few ulp: no own polynomials are needed on the GPU.

One forward and one slope per row of `minifuse.kernels.activations`, under the row's name: the
formulas of the CPU kernels (`minifuse.kernels.cpu.mathfn`) restated as device functions; the
kernel tests run every row on every backend against the same float64 references.
"""
import functools
import math

import numpy as np

from ..activations import GELU_TANH_C, INV_SQRT_2, INV_SQRT_2PI, SQRT_2_OVER_PI
from .runtime import cuda


def compute_dtype(dtype):
    """The NumPy dtype a kernel computes in for arrays of `dtype`."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


@functools.lru_cache(maxsize=None)
def activations(ct):
    """{name: device function act(x)} for compute dtype `ct` (np.float32 or np.float64)."""
    ct = np.dtype(ct).type
    zero, half, one, two = ct(0.0), ct(0.5), ct(1.0), ct(2.0)
    rsqrt2, c_tanh, k_tanh = ct(INV_SQRT_2), ct(SQRT_2_OVER_PI), ct(GELU_TANH_C)

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


@functools.lru_cache(maxsize=None)
def derivatives(ct):
    """{name: device function act'(x)}, the slopes of `activations` for the fused backward kernels,
    as `minifuse.kernels.cpu.mathfn`'s `<name>_slope` (derivations in docs/fused-training.md).

    gelu (exact) Phi(x) + x phi(x); gelu_tanh s + 2 x s (1 - s) c0 (1 + 3 c1 x^2) with s =
    sigmoid(2u), u = c0 (x + c1 x^3); silu s (1 + x (1 - s)); sigmoid s (1 - s); tanh 1 - t^2;
    relu 1 where x > 0, else 0 (also for NaN, like the taped op).
    """
    ct = np.dtype(ct).type
    zero, half, one, two, three = ct(0.0), ct(0.5), ct(1.0), ct(2.0), ct(3.0)
    rsqrt2, inv_sqrt_2pi = ct(INV_SQRT_2), ct(INV_SQRT_2PI)
    c0, c1 = ct(SQRT_2_OVER_PI), ct(GELU_TANH_C)
    sig = activations(ct)["sigmoid"]

    @cuda.jit(device=True, inline=True)
    def none(x):
        return one

    @cuda.jit(device=True, inline=True)
    def relu(x):
        return one if x > zero else zero

    @cuda.jit(device=True, inline=True)
    def gelu(x):
        cdf = half * (one + math.erf(x * rsqrt2))
        return cdf + x * math.exp(-half * x * x) * inv_sqrt_2pi

    @cuda.jit(device=True, inline=True)
    def gelu_tanh(x):
        s = sig(two * c0 * (x + c1 * x * x * x))
        return s + two * x * s * (one - s) * c0 * (one + three * c1 * x * x)

    @cuda.jit(device=True, inline=True)
    def silu(x):
        s = sig(x)
        return s * (one + x * (one - s))

    @cuda.jit(device=True, inline=True)
    def sigmoid(x):
        s = sig(x)
        return s * (one - s)

    @cuda.jit(device=True, inline=True)
    def tanh(x):
        t = math.tanh(x)
        return one - t * t

    return dict(none=none, relu=relu, gelu=gelu, gelu_tanh=gelu_tanh, silu=silu,
                sigmoid=sigmoid, tanh=tanh)
