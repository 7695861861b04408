"""Bit-level conversions for the CUDA kernels: a float32 and its int32 bits, and float16 bits and
float32 values. With them a kernel can move four float16 values per memory instruction (one
uint64 load) and still compute in float32: numba has no scalar reinterpretation of a float16,
so the two conversions are written out in integer operations (round to nearest even, subnormals,
Inf and NaN as IEEE 754; a NaN comes back as the quiet NaN 0x7E00, sign kept).

float16 bits -> float32: move exponent and mantissa into place, rebias the exponent (Inf/NaN
rebiased to 255; subnormals renormalised by one exact float subtraction). float32 -> float16:
F. Giesen's "float_to_half_fast3_rtne": overflow to Inf, results below 2^-14 by one float
addition that rounds the shifted-out bits, normal numbers by adding half an ulp (plus the lowest
kept bit, for ties to even) before truncating.
"""
import numpy as np

from .runtime import SIMULATOR, cuda

__all__ = ["as_int", "as_float", "half_to_float", "float_to_half"]

if SIMULATOR:       # the simulator's libdevice functions are stubs: the same bit casts in NumPy
    def as_int(v):
        return np.float32(v).view(np.int32)

    def as_float(i):
        return np.int32(i).view(np.float32)
else:
    from numba.cuda import libdevice
    as_int, as_float = libdevice.float_as_int, libdevice.int_as_float

_EXP_MASK = np.int32(0x7C00 << 13)           # a float16 exponent, moved to float32's place
_REBIAS = np.int32((127 - 15) << 23)         # float16 exponent bias 15 -> float32's 127
_INF_REBIAS = np.int32((128 - 16) << 23)     # exponent 31 (Inf/NaN) -> 255
_ONE = np.int32(1 << 23)
_MIN_NORMAL = np.float32(2.0 ** -14)         # float16's smallest normal number
_OVERFLOW = np.int32((127 + 16) << 23)       # 65536.0: |f| at or above rounds to Inf
_F32_INF = np.int32(0x7F800000)
_DENORM_MAGIC = np.float32(0.5)              # bits ((127 - 15) + (23 - 10) + 1) << 23
_DENORM_MAGIC_BITS = np.int32(126 << 23)
_ROUND_REBIAS = np.int32(((15 - 127) << 23) + 0xFFF)


@cuda.jit(device=True, inline=True)
def half_to_float(h):
    """The float32 value of the float16 bit pattern h (an integer 0..65535)."""
    h = np.int32(h)
    o = np.int32((h & 0x7FFF) << 13)
    e = o & _EXP_MASK
    o = np.int32(o + _REBIAS)
    if e == _EXP_MASK:
        f = as_float(np.int32(o + _INF_REBIAS))
    elif e == 0:
        f = as_float(np.int32(o + _ONE)) - _MIN_NORMAL
    else:
        f = as_float(o)
    return -f if h & 0x8000 else f


@cuda.jit(device=True, inline=True)
def float_to_half(f):
    """The float16 bit pattern (an int32 0..65535) nearest to float32 f (ties to even)."""
    u = np.int32(as_int(f))
    sign = (u >> 16) & 0x8000
    u = np.int32(u & 0x7FFFFFFF)
    if u >= _OVERFLOW:
        o = np.int32(0x7E00) if u > _F32_INF else np.int32(0x7C00)
    elif u < np.int32(113 << 23):
        o = np.int32(as_int(as_float(u) + _DENORM_MAGIC) - _DENORM_MAGIC_BITS)
    else:
        odd = (u >> 13) & 1
        o = np.int32((u + _ROUND_REBIAS + odd) >> 13)
    return np.int32(o | sign)
