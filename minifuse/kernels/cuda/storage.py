"""How the kernels read and write the arrays of each dtype they take: `access(dtype)` gives the
pair of device functions (load, store) for one dtype, so that each kernel's formula is written
once, in its compute dtype (`mathfn.compute_dtype`), for every storage dtype.

- float16, float32, float64: numba arrays of their own dtype. load widens an element to the
  compute dtype (float16 to float32); store returns the value unchanged and the assignment to
  the array rounds it (float16: to nearest, ties to even).
- bfloat16 (ml_dtypes): numba has no such type, so a bfloat16 array reaches a kernel as its
  bits, a uint16 array (`runtime.device_array` makes that view; copy-only kernels just move the
  bits). A bfloat16 is the upper half of the float32 of the same value: load shifts the bits up
  by 16 and reinterprets them as a float32 (exact); store rounds a float32 to the nearest
  bfloat16, ties to even, with the integer arithmetic of ml_dtypes (and Eigen, PyTorch): add
  0x7FFF plus the lowest kept bit, keep the upper 16 bits. That also rounds values past the
  largest bfloat16 up to inf, and keeps infinities and zeros; a NaN becomes the quiet NaN of its
  sign (0x7FC0 / 0xFFC0), as ml_dtypes makes it (rounding its payload could carry into the
  exponent and give inf). On GPUs of compute capability 8.0 and later the kernels get the same
  bits from the GPU's own conversion (``cvt.rn.bf16.f32``, with NaN set to that quiet NaN):
  `bfloat16_store`; `bfloat16_pair_store` converts two values at once (``cvt.rn.bf16x2.f32``),
  for the 8-byte word stores. The integer rounding is the reference, and what the simulator runs.

A kernel that takes arrays of several dtypes (half inputs with float32 row statistics, float64
partial sums, an additive mask in the compute dtype) gets one pair per dtype; only the arrays
that are bfloat16 are converted.

The bit casts are libdevice's ``__nv_float_as_int`` / ``__nv_int_as_float``. The Numba CUDA
simulator's libdevice functions are stubs, so there the same casts are NumPy views, and the rest
of the conversion (shifts, rounding, NaN test) runs as it does on the GPU.
"""
import functools

import numpy as np

from ...dtypes import bfloat16 as BFLOAT16
from .mathfn import compute_dtype
from .runtime import SIMULATOR, cuda

__all__ = ["BFLOAT16", "access", "float_as_int", "int_as_float", "bfloat16_to_float", "float_to_bfloat16",
           "bfloat16_store"]

if SIMULATOR:       # the simulator's libdevice functions are stubs: the same bit casts in NumPy
    def float_as_int(v):
        return np.float32(v).view(np.int32)

    def int_as_float(i):
        return np.int32(i).view(np.float32)
else:
    from numba.cuda import libdevice
    float_as_int, int_as_float = libdevice.float_as_int, libdevice.int_as_float

# float32 bits as uint32 throughout: 64-bit integer arithmetic is two instructions per step on
# the GPU, and these run once per element of every bfloat16 kernel.
_U = np.uint32
_ABS, _INF = _U(0x7FFFFFFF), _U(0x7F800000)          # float32: all bits but the sign; +inf
_QUIET_NAN, _SIGN = _U(0x7FC0), _U(0x8000)           # bfloat16: the quiet NaN ml_dtypes makes; the sign bit
_HALF_ULP = _U(0x7FFF)                               # half a bfloat16 ulp in float32 bits, less one (the tie)
_SIXTEEN, _ONE = _U(16), _U(1)


@cuda.jit(device=True, inline=True)
def bfloat16_to_float(bits):
    """The float32 value of bfloat16 bits (a uint16, or an unsigned integer below 2^16): exact."""
    return int_as_float(np.int32(_U(bits) << _SIXTEEN))


@cuda.jit(device=True, inline=True)
def float_to_bfloat16(v):
    """The bits (a uint16) of float32 v rounded to the nearest bfloat16, ties to even."""
    u = _U(float_as_int(np.float32(v)))
    if (u & _ABS) > _INF:
        return np.uint16(((u >> _SIXTEEN) & _SIGN) | _QUIET_NAN)
    # non-NaN: u <= 0xFF800000, so the sum stays below 2^32 (no carry out of the sign bit)
    return np.uint16((u + _HALF_ULP + ((u >> _SIXTEEN) & _ONE)) >> _SIXTEEN)


if not SIMULATOR:  # pragma: no cover - compiled for the GPU only
    from llvmlite import ir
    from numba import types
    try:
        from numba.cuda.extending import intrinsic
    except ImportError:
        from numba.core.extending import intrinsic

    @intrinsic
    def _cvt_rn_bf16(typingctx, v):
        """float32 -> bfloat16 bits by the GPU's own conversion (compute capability 8.0 and
        later): to nearest, ties to even, as float_to_bfloat16 rounds; NaN becomes 0x7FFF."""
        def codegen(context, builder, sig, args):
            fty = ir.FunctionType(ir.IntType(16), [ir.FloatType()])
            return builder.asm(fty, "cvt.rn.bf16.f32 $0, $1;", "=h,f", args, False)
        return types.uint16(types.float32), codegen

    @cuda.jit(device=True, inline=True)
    def _float_to_bfloat16_cvt(v):
        """float_to_bfloat16's bits in one instruction (and a select for NaN, ml_dtypes' quiet
        NaN of its sign where the instruction gives 0x7FFF)."""
        f = np.float32(v)
        if f != f:
            return np.uint16(((_U(float_as_int(f)) >> _SIXTEEN) & _SIGN) | _QUIET_NAN)
        return _cvt_rn_bf16(f)

    @intrinsic
    def _cvt_rn_bf16x2(typingctx, hi, lo):
        """Two float32 -> the bits of two bfloat16 in one uint32 (hi in the upper 16 bits), by
        one conversion instruction; the rounding of `_cvt_rn_bf16`."""
        def codegen(context, builder, sig, args):
            fty = ir.FunctionType(ir.IntType(32), [ir.FloatType(), ir.FloatType()])
            return builder.asm(fty, "cvt.rn.bf16x2.f32 $0, $1, $2;", "=r,f,f", args, False)
        return types.uint32(types.float32, types.float32), codegen

    @cuda.jit(device=True, inline=True)
    def _bfloat16_pair_cvt(lo, hi):
        """The bits of bfloat16(lo) | bfloat16(hi) << 16: one instruction for both, or where
        either is NaN, each converted on its own (ml_dtypes' quiet NaN)."""
        a, b = np.float32(lo), np.float32(hi)
        if a != a or b != b:
            return _U(_float_to_bfloat16_cvt(a)) | (_U(_float_to_bfloat16_cvt(b)) << _SIXTEEN)
        return _cvt_rn_bf16x2(b, a)


@cuda.jit(device=True, inline=True)
def _bfloat16_pair_int(lo, hi):
    """The bits of bfloat16(lo) | bfloat16(hi) << 16 by the integer rounding."""
    return _U(float_to_bfloat16(lo)) | (_U(float_to_bfloat16(hi)) << _SIXTEEN)


@functools.lru_cache(maxsize=None)
def bfloat16_pair_store():
    """`bfloat16_store` for two values at once: (lo, hi) -> the uint32 of their bits, lo in the
    lower half; one conversion instruction for the pair where the GPU has it."""
    if SIMULATOR or cuda.get_current_device().compute_capability < (8, 0):
        return _bfloat16_pair_int
    return _bfloat16_pair_cvt


@functools.lru_cache(maxsize=None)
def bfloat16_store():
    """The kernels' float32 -> bfloat16 conversion: `float_to_bfloat16`, or where the GPU has its
    own conversion instruction (compute capability 8.0 and later) the same bits from it: the
    integer rounding is about ten instructions per value, in kernels that convert every element
    they write (chosen when the first bfloat16 kernel is built, for the current device)."""
    if SIMULATOR or cuda.get_current_device().compute_capability < (8, 0):
        return float_to_bfloat16
    return _float_to_bfloat16_cvt


@functools.lru_cache(maxsize=None)
def access(dtype):
    """(load, store) for arrays of `dtype` as the kernels see them: ``load(a[i])`` is the element in
    the compute dtype, ``a[i] = store(v)`` writes the compute-dtype value v (see the module
    docstring)."""
    dtype = np.dtype(dtype)
    if BFLOAT16 is not None and dtype == BFLOAT16:
        return bfloat16_to_float, bfloat16_store()
    ctype = compute_dtype(dtype).type

    @cuda.jit(device=True, inline=True)
    def load(v):
        return ctype(v)

    @cuda.jit(device=True, inline=True)
    def store(v):
        return v
    return load, store
