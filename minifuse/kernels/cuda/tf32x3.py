"""float32 GEMMs on tensor cores at (nearly) float32 accuracy: the 3xTF32 split.

Hopper's float32 cores reach about 51 TFLOP/s (measured, 8192^3 GEMM); its tensor cores take
TF32 operands (float32's 8-bit exponent, 10 of its 23 mantissa bits) several times faster, but
one TF32 product is only good to about 1e-3. Splitting each float32 into two TF32 numbers

    a = ahi + alo,   ahi = tf32(a),   alo = tf32(a - ahi)     (|a - ahi - alo| <= 2^-22 |a|)

gives a @ b = ahi bhi + ahi blo + alo bhi + alo blo; the last term is about 2^-22 of the
product and is dropped. The three that remain are ONE GEMM over three times the inner size:

    [alo | ahi | ahi] (N, 3K)  @  [bhi | blo | bhi]^T (3K, M)

with cuBLASLt in CUBLAS_COMPUTE_32F_FAST_TF32 (float32 accumulation). `split3` writes such an
operand in one pass: a read of the input, three writes.

The small terms come first along K on purpose. The tensor cores' float32 accumulation is not
float32's round-to-nearest (it truncates while aligning), so what is added to a large
accumulator loses more. Measured on the H200, 4096 x 768 -> 3072, relative error against
float64 (BENCHMARKS.md): float32 cores 5.0e-7; small terms first 1.8e-6, big terms first
8.0e-6, with alo blo added too 8.0e-6 (the dropped term does not matter); one TF32 GEMM 2.9e-4.

tf32(v) rounds to nearest (ties away from zero) by integer arithmetic on the bits, so the tensor
core, which would otherwise drop the low 13 bits, sees exact TF32 values. Non-finite inputs
keep their value in hi and get lo = 0 (an Inf or NaN still reaches the result; an Inf in the
operands can become NaN where float32 gives Inf, through Inf * 0 in the correction terms).
"""
import functools
import math

import numpy as np

from .elementwise import ROW_BLOCKS
from .runtime import blocks, cuda, launch, row_threads
from .storage import float_as_int as _as_int
from .storage import int_as_float as _as_float

LO_FIRST, LO_MIDDLE = 0, 1   # where the lo block goes: [lo|hi|hi] for a, [hi|lo|hi] for b

_HALF_ULP, _KEEP = 0x1000, -0x2000        # TF32 keeps the top 10 of 23 mantissa bits (mask 0xFFFFE000)


@cuda.jit(device=True, inline=True)
def tf32(v):
    """v rounded to the nearest TF32 number (ties away from zero) for finite v; truncated where
    rounding up would overflow to Inf."""
    bits = _as_int(v)
    r = _as_float(np.int32((bits + _HALF_ULP) & _KEEP))
    if math.isinf(r):
        r = _as_float(np.int32(bits & _KEEP))
    return r


@functools.lru_cache(maxsize=None)
def _split_kernel():
    zero = np.float32(0)

    @cuda.jit(device=True, inline=True)
    def put(out, lo_at, r, c, k, v):
        if math.isinf(v) or math.isnan(v):
            hi, lo = v, zero
        else:
            hi = tf32(v)
            lo = tf32(v - hi)                 # v - hi is exact in float32
        out[r, c] = lo if lo_at == 0 else hi
        out[r, k + c] = lo if lo_at == 1 else hi
        out[r, 2 * k + c] = lo if lo_at == 2 else hi

    @cuda.jit
    def split(x, lo_at, out):
        """out (N, 3K) = three blocks of x's K columns: tf32(x) in two, the rest in block lo_at.
        Thread per column, rows strided by gridDim.y, four loads before their stores, as the
        bias_act kernel (H200, GPU time: x 4096 x 768 15.2 us, w 3072 x 768 12.7 us; one row at
        a time 23.4 and 21.9 us, measured on another H200 machine)."""
        n, k = x.shape
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c >= k:
            return
        r = cuda.blockIdx.y
        g = cuda.gridDim.y
        while r + 3 * g < n:
            v0, v1, v2, v3 = x[r, c], x[r + g, c], x[r + 2 * g, c], x[r + 3 * g, c]
            put(out, lo_at, r, c, k, v0)
            put(out, lo_at, r + g, c, k, v1)
            put(out, lo_at, r + 2 * g, c, k, v2)
            put(out, lo_at, r + 3 * g, c, k, v3)
            r += 4 * g
        while r < n:
            put(out, lo_at, r, c, k, x[r, c])
            r += g
    return split


def split3(xp, x, lo_at, axis=-1):
    """The 3xTF32 operand of float32 x: x's ``axis`` (the GEMM's inner dimension) three times as
    long, tf32(x) in two of its blocks and the rest in block lo_at (LO_FIRST for the left operand,
    LO_MIDDLE for the right one). The inner dimension may be any axis, so that a transposed
    operand is split as it is stored: x viewed as (P, Q), Q the elements from ``axis`` on, is
    written as (P, 3Q), and for a last axis x may have any strides."""
    axis %= x.ndim
    p, q = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    x2 = x.reshape(p, q)
    out = xp.empty((p, 3 * q), np.float32)
    if p and q:
        t = row_threads(q)
        launch(_split_kernel(), (blocks(q, t), min(p, ROW_BLOCKS)), t, x2, lo_at, out)
    return out.reshape(x.shape[:axis] + (3 * x.shape[axis],) + x.shape[axis + 1:])
