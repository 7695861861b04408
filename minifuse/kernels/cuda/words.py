"""Row elements moved as 8-byte words: four float16 or bfloat16 or two float32 values per load
and store.

The row kernels (LayerNorm, the masked softmax) are bound by how many bytes each thread has in
flight, not by their arithmetic: a warp loading one 2-byte half per thread moves 64 bytes per
load instruction, the same warp loading 8-byte words 512. numba types neither half2 nor vector
loads, so a word is loaded as a uint64 straight from the array's memory (`load`, an LLVM
intrinsic: no host-side view of the array is made) and split into its values by bit casts:
float16 through the GPU's half <-> float conversions, float32 by reinterpreting its 32 bits,
bfloat16 (whose arrays reach the kernels as their uint16 bits) by storage.py's conversions of
each 16-bit lane. A word of float16 or bfloat16 is stored from pairs of values, each pair
converted by one instruction where the GPU has one (`cvt.rn.f16x2.f32`, `cvt.rn.bf16x2.f32`:
compute capability 8.0 and later), with the rounding of the one-value conversions. float64 is
one value per word already.

A format is chosen per launch (`format_for`): words where every array of the launch has rows
that start on 8-byte boundaries, elements contiguous along the row, and a row length that the
word's value count divides; otherwise one element at a time (`ONE`), converted by storage.py's
load and store for the array's dtype.
The kernels are written once over a format's four functions:

    w = word2(a, row, i) / word1(a, i)   word i of row `row` (2-D) or of a 1-D array
    value(w, k)                          the k-th value of w, in the compute dtype
    put2(a, row, i, vals, base)          vals[base:base + n] stored as word i of row `row`

Under the CUDA simulator the same functions are NumPy slices and views (the same bits), so the
tests run the word path too.
"""
import functools

import numpy as np

from .runtime import SIMULATOR, cuda
from .storage import BFLOAT16, access, bfloat16_pair_store, bfloat16_to_float, int_as_float

WORD = 8                  # bytes
ONE = "one"               # one element per word, in the array's dtype
BF16X4 = "bf16x4"         # four bfloat16 values per word, 16 bits each
# format -> (dtype, values per word)
FORMATS = {"half4": (np.dtype(np.float16), 4), "float2": (np.dtype(np.float32), 2),
           **({} if BFLOAT16 is None else {BF16X4: (BFLOAT16, 4)})}
_BY_DTYPE = {dt: name for name, (dt, _) in FORMATS.items()}


def values_per_word(fmt):
    return 1 if fmt == ONE else FORMATS[fmt][1]


def address(a):
    """The address of an array's first element: CuPy's pointer, or NumPy's under the simulator
    (through ``ctypes``: a NumPy bfloat16 array has no buffer)."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def format_for(length, *arrays):
    """The format of a launch whose arrays (None entries ignored) are rows of `length` elements
    (2-D, the row along the last axis) or vectors of `length` (1-D)."""
    first = next(a for a in arrays if a is not None)
    fmt = _BY_DTYPE.get(first.dtype)
    if fmt is None or length % FORMATS[fmt][1]:
        return ONE
    for a in arrays:
        if a is None:
            continue
        if (a.dtype != first.dtype or a.shape[-1] != length or a.strides[-1] != a.itemsize
                or address(a) % WORD or (a.ndim == 2 and a.shape[0] > 1 and a.strides[0] % WORD)):
            return ONE
    return fmt


def words(length, fmt):
    """Words per row of `length` elements."""
    return length // values_per_word(fmt)


# ---- bit casts and raw word access ---------------------------------------------------------------
if SIMULATOR:
    def _word_at(a, index, n):
        """The n elements of a 1-D view starting at element index, as one uint64."""
        return a[index:index + n].view(np.uint64)[0]

    def _half_at(w, shift):
        return np.float32(np.array((int(w) >> int(shift)) & 0xFFFF, np.uint16).view(np.float16))

    def _float_at(w, shift):
        return np.array((int(w) >> int(shift)) & 0xFFFFFFFF, np.uint32).view(np.float32)[()]
else:  # pragma: no cover - compiled for the GPU only
    from llvmlite import ir
    from numba import types
    try:
        from numba.cuda.extending import intrinsic
    except ImportError:
        from numba.core.extending import intrinsic

    _I64 = ir.IntType(64)

    def _address(context, builder, aryty, ary, row, index):
        """The byte address of word `index` of row `row` (row ignored for a 1-D array)."""
        a = context.make_array(aryty)(context, builder, value=ary)
        offset = builder.mul(builder.sext(index, _I64) if index.type.width < 64 else index,
                             ir.Constant(_I64, WORD))
        if aryty.ndim == 2:
            row = builder.sext(row, _I64) if row.type.width < 64 else row
            offset = builder.add(offset, builder.mul(row, builder.extract_value(a.strides, 0)))
        base = builder.ptrtoint(a.data, _I64)
        return builder.inttoptr(builder.add(base, offset), ir.PointerType(_I64))

    @intrinsic
    def _load(typingctx, ary, row, index):
        def codegen(context, builder, sig, args):
            return builder.load(_address(context, builder, sig.args[0], args[0], args[1], args[2]), align=WORD)
        return types.uint64(ary, row, index), codegen

    @intrinsic
    def _store(typingctx, ary, row, index, word):
        def codegen(context, builder, sig, args):
            builder.store(args[3], _address(context, builder, sig.args[0], args[0], args[1], args[2]), align=WORD)
            return context.get_dummy_value()
        return types.void(ary, row, index, word), codegen

    @intrinsic
    def _half_at(typingctx, w, shift):
        def codegen(context, builder, sig, args):
            bits = builder.trunc(builder.lshr(args[0], args[1]), ir.IntType(16))
            return builder.fpext(builder.bitcast(bits, ir.HalfType()), ir.FloatType())
        return types.float32(w, shift), codegen

    @intrinsic
    def _float_at(typingctx, w, shift):
        def codegen(context, builder, sig, args):
            bits = builder.trunc(builder.lshr(args[0], args[1]), ir.IntType(32))
            return builder.bitcast(bits, ir.FloatType())
        return types.float32(w, shift), codegen

    @intrinsic
    def _half_bits(typingctx, x):
        """float32 -> its float16 (round to nearest even, as NumPy's astype) bits, widened to 64."""
        def codegen(context, builder, sig, args):
            return builder.zext(builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16)), _I64)
        return types.uint64(x), codegen

    @intrinsic
    def _half2_bits(typingctx, lo, hi):
        """Two float32 -> their float16 bits (the rounding of `_half_bits`) in one uint32, lo in
        the lower half, by one conversion instruction (compute capability 8.0 and later)."""
        def codegen(context, builder, sig, args):
            fty = ir.FunctionType(ir.IntType(32), [ir.FloatType(), ir.FloatType()])
            return builder.asm(fty, "cvt.rn.f16x2.f32 $0, $1, $2;", "=r,f,f", [args[1], args[0]], False)
        return types.uint32(lo, hi), codegen

    @intrinsic
    def _float_bits(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.zext(builder.bitcast(args[0], ir.IntType(32)), _I64)
        return types.uint64(x), codegen


_LOW32, _HIGH16 = np.uint64(0xFFFFFFFF), np.uint32(0xFFFF0000)


@cuda.jit(device=True, inline=True)
def _bfloat16_lane(w, k):
    """The k-th bfloat16 of word w (bits 16k to 16k + 15) in float32: from the 32-bit half of w
    that holds it (one 64-bit shift; the rest 32-bit)."""
    half = np.uint32((w >> np.uint64(32 * (k // 2))) & _LOW32)
    if k % 2 == 0:
        return bfloat16_to_float(half & np.uint32(0xFFFF))
    return int_as_float(np.int32(half & _HIGH16))      # already in the upper half: no shift


@functools.lru_cache(maxsize=None)
def functions(fmt, dtype):
    """(word2, word1, value, put2) of format `fmt` for arrays of `dtype`, values in its compute
    dtype (`mathfn.compute_dtype`)."""
    if fmt == ONE:
        load, store = access(dtype)

        @cuda.jit(device=True, inline=True)
        def word2(a, row, i):
            return a[row, i]

        @cuda.jit(device=True, inline=True)
        def word1(a, i):
            return a[i]

        @cuda.jit(device=True, inline=True)
        def value(w, k):
            return load(w)

        @cuda.jit(device=True, inline=True)
        def put2(a, row, i, vals, base):
            a[row, i] = store(vals[base])
        return word2, word1, value, put2

    _, n = FORMATS[fmt]
    half = fmt == "half4"
    width = 16 if fmt in ("half4", BF16X4) else 32
    at = _half_at if half else _float_at

    if SIMULATOR:
        def word2(a, row, i):
            return _word_at(a[row], i * n, n)

        def word1(a, i):
            return _word_at(a, i * n, n)

        if fmt == BF16X4:      # the lanes and pairs as on the GPU; the bits stored one lane at a time
            pair = bfloat16_pair_store()

            def put2(a, row, i, vals, base):
                for k in range(0, n, 2):
                    both = int(pair(vals[base + k], vals[base + k + 1]))
                    a[row, i * n + k], a[row, i * n + k + 1] = both & 0xFFFF, both >> 16
            return word2, word1, _bfloat16_lane, put2

        def value(w, k):
            return at(w, width * k)

        def put2(a, row, i, vals, base):
            for k in range(n):
                a[row, i * n + k] = vals[base + k]         # NumPy's cast: round to nearest even
        return word2, word1, value, put2

    zero = np.uint64(0)  # pragma: no cover - GPU only

    @cuda.jit(device=True, inline=True)
    def word2(a, row, i):
        return _load(a, row, i)

    @cuda.jit(device=True, inline=True)
    def word1(a, i):
        return _load(a, 0, i)

    if fmt == BF16X4:
        value = _bfloat16_lane
    else:
        @cuda.jit(device=True, inline=True)
        def value(w, k):
            return at(w, np.uint64(width * k))

    # A 16-bit format converts its values two per instruction (the GPU's cvt.rn.{f16,bf16}x2.f32,
    # where it has them): in the LayerNorm and bias + GELU kernels the stores' conversions, one
    # instruction per value, cost more than the loads (BENCHMARKS.md).
    pair = bfloat16_pair_store() if fmt == BF16X4 else _half_pair_store() if half else None
    if pair is not None:
        @cuda.jit(device=True, inline=True)
        def put2(a, row, i, vals, base):
            w = zero
            for k in range(0, n, 2):
                w |= np.uint64(pair(vals[base + k], vals[base + k + 1])) << np.uint64(width * k)
            _store(a, row, i, w)
        return word2, word1, value, put2

    @cuda.jit(device=True, inline=True)
    def put2(a, row, i, vals, base):
        w = zero
        for k in range(n):
            w |= _float_bits(np.float32(vals[base + k])) << np.uint64(width * k)
        _store(a, row, i, w)
    return word2, word1, value, put2


@functools.lru_cache(maxsize=None)
def _half_pair_store():  # pragma: no cover - GPU only
    """(lo, hi) float32 -> their float16 bits in one uint32, lo in the lower half: one conversion
    instruction for both where the GPU has it (compute capability 8.0 and later), else two."""
    if cuda.get_current_device().compute_capability >= (8, 0):
        @cuda.jit(device=True, inline=True)
        def pair(lo, hi):
            return _half2_bits(np.float32(lo), np.float32(hi))
        return pair

    @cuda.jit(device=True, inline=True)
    def pair(lo, hi):
        return np.uint32(_half_bits(np.float32(lo)) | (_half_bits(np.float32(hi)) << np.uint64(16)))
    return pair
