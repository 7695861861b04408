"""Scalar math for the fused CPU kernels: exp, erf, tanh, the activations built on them and their
slopes, and the dispatch of an activation code to its formula.

Why this module exists: pip builds of Numba have no SVML, so a loop that calls `math.exp`,
`math.tanh` or `math.erf` makes one scalar libm call per element and does not vectorize
(measured on the 2-core CPU: a bias + GELU sweep over 512x3072 took 24 ms with `math.tanh`,
0.26 ms with a polynomial). Everything here is straight-line arithmetic plus selects, so LLVM turns a loop over
it into AVX-512 code.

Precision, per dtype (tests/kernels/test_mathfn.py measures all of it):
- float32: own `exp` (Cody-Waite reduction, degree-7 polynomial, 2^n from exponent bits), a
  rational `erf` (the XLA/Eigen float approximation evaluated in float64, exactly +-1 beyond
  |x| = 4) and a `tanh` from
  `exp` with an odd series near 0. All are within about 1e-7 absolute of `math.*`.
- exp in both dtypes returns 0 where the exact result is a denormal number (below 1.2e-38 in
  float32): making one is slow on Intel cores (`_EXP32`).
- float64: own `exp` (degree-13 polynomial, within a few ulp); `erf` and `tanh` are `math.erf`
  and `math.tanh`. A vectorizable float64 erf accurate to the 1e-10 relative that fused-vs-unfused
  requires is long (fdlibm uses five intervals); float64 is the checking dtype, not the fast one.

Every function is generic over float32/float64 through `@overload`; literals are cast to the
argument's type with `lit` so float32 code never silently widens to float64.
NaN propagates through every function and +-inf map to the limits of the exact function.
"""
import math
import warnings

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, overload

from ..activations import CODES, GELU_TANH_C, INV_SQRT_2, INV_SQRT_2PI, SQRT_2_OVER_PI
from .jit import inline

# Inlining these overloads at the Numba IR level (needed: LLVM alone does not inline tanh_, and
# the loop then stays scalar, 15x slower) trips a pedantic SSA self-check that Numba itself
# calls harmless ("internal pedantic check"). Silence only that warning, only from numba's ssa
# and where it names a line of these kernels (a compiled helper's call: the module it gives is
# the source file's path).
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning, module=r"numba\.core\.ssa")
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning, module=r".*minifuse.kernels.cpu.")


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret int32 bits as float32 / int64 bits as float64 (builds 2**n without a libm call)."""
    if bits == types.int32:
        return types.float32(bits), lambda ctx, b, sig, args: b.bitcast(args[0], ir.FloatType())
    if bits == types.int64:
        return types.float64(bits), lambda ctx, b, sig, args: b.bitcast(args[0], ir.DoubleType())
    return None


def lit(x, value):
    """`value` converted to the float type of `x` (inside njit; a plain cast in Python)."""
    return type(x)(value)


@overload(lit, inline="always")
def _lit(x, value):
    ty = x
    return lambda x, value: ty(value)


# exp(x) = 2**n * exp(r), n = round(x / ln2), r = x - n*ln2 with ln2 split in a high part
# (exactly representable products) and a low part (Cody-Waite), |r| <= ln2/2.
# Constants: (overflow above, zero below, ln2 hi, ln2 lo, Taylor degree). "Zero below" is the
# smallest x whose exp is a normal number: the denormal results under it are flushed to 0, and the
# arithmetic never makes one (x is clamped there first). On Intel cores every float operation
# that produces a denormal takes a microcode assist of about a hundred cycles, and a vectorized
# select computes both sides: softmax's masked keys (exp(-inf)) made the packed attention ten
# times slower at lengths that are not a multiple of its key block.
_EXP32 = (88.72283935546875, -87.33654022216797, 0.693359375, -2.12194440e-4, 7)
_EXP64 = (709.782712893384, -708.3964185322641, 6.93147180369123816490e-01,
          1.90821492927058770002e-10, 13)


def exp_(x):
    return math.exp(x)


@overload(exp_, inline="always")
def _exp(x):
    if x == types.float32:
        hi, lo, ln2_hi, ln2_lo, degree = _EXP32
        itype, bias, shift = np.int32, 127, 23
    elif x == types.float64:
        hi, lo, ln2_hi, ln2_lo, degree = _EXP64
        itype, bias, shift = np.int64, 1023, 52
    else:
        return None
    # Taylor coefficients 1/k!, highest degree first for Horner.
    coefs = tuple(1.0 / math.factorial(k) for k in range(degree, -1, -1))

    def impl(x):
        xc = lit(x, hi) if x > hi else x           # clamp, NaN passes through both tests
        xc = lit(x, lo) if xc < lo else xc
        nf = np.floor(xc * lit(x, 1.4426950408889634) + lit(x, 0.5))   # math.floor gives int64
        nf = nf if nf == nf else x - x            # NaN: keep the integer conversion defined
        r = xc - nf * lit(x, ln2_hi) - nf * lit(x, ln2_lo)
        p = lit(x, 0.0)
        for c in coefs:                           # unrolled: coefs is a compile-time tuple
            p = p * r + lit(x, c)
        n = itype(nf)
        n1 = n >> 1                               # 2**n as two normal factors: no denormal scale
        # Numba widens int32 arithmetic to int64: cast back so the bit pattern has the float's width.
        s1 = _float_from_bits(itype((n1 + bias) << shift))
        s2 = _float_from_bits(itype((n - n1 + bias) << shift))
        y = p * s1 * s2
        y = lit(x, math.inf) if x > hi else y
        return lit(x, 0.0) if x < lo else y
    return impl


# XLA / Eigen float erf: erf(x) ~= x * P(x^2) / Q(x^2) on [-4, 4]; float32(erf(4)) == 1.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def erf_(x):
    return math.erf(x)


@overload(erf_, inline="always")
def _erf(x):
    if x == types.float64:
        return lambda x: math.erf(x)
    if x != types.float32:
        return None

    # Evaluated in float64: in float32 the ratio loses accuracy near |x| = 3 (4e-7 measured);
    # in float64 the approximation itself is within 7e-8, then rounds once to float32.
    def impl(x):
        xd = np.float64(x)
        xc = 4.0 if xd > 4.0 else xd               # keeps the unused lanes finite
        xc = -4.0 if xc < -4.0 else xc
        x2 = xc * xc
        p = 0.0
        for c in _ERF_P:
            p = p * x2 + c
        q = 0.0
        for c in _ERF_Q:
            q = q * x2 + c
        y = np.float32(xc * p / q)
        return math.copysign(lit(x, 1.0), x) if abs(x) >= 4.0 else y   # NaN takes the y arm
    return impl


def tanh_(x):
    return math.tanh(x)


@overload(tanh_, inline="always")
def _tanh(x):
    if x == types.float64:
        return lambda x: math.tanh(x)
    if x != types.float32:
        return None

    def impl(x):
        one = lit(x, 1.0)
        ax = abs(x)
        e = exp_(lit(x, -2.0) * ax)               # in (0, 1]: no overflow for any x
        big = (one - e) / (one + e)
        x2 = x * x                                # odd series where 1 - e would cancel
        # x * (1 + ...) rather than x + x * (...): keeps tanh(-0) == -0.
        small = x * (one + x2 * (lit(x, -1.0 / 3.0) + x2 * (lit(x, 2.0 / 15.0) + x2 * lit(x, -17.0 / 315.0))))
        return small if ax < 0.125 else math.copysign(big, x) if ax == ax else x
    return impl


# Activations: the rows of `minifuse.kernels.activations`, one forward and one slope each, under
# the row's name. tests/kernels/reference.py restates them in plain NumPy.
@njit(cache=True, inline="always")
def none(x):
    return x


@njit(cache=True, inline="always")
def none_slope(x):
    return lit(x, 1.0)


@njit(cache=True, inline="always")
def relu(x):
    return lit(x, 0.0) if x < 0 else x           # like np.maximum(x, 0): NaN stays NaN


@njit(cache=True, inline="always")
def relu_slope(x):
    return lit(x, 1.0) if x > 0 else lit(x, 0.0)  # 0 for NaN, like the taped op


@njit(cache=True, inline="always")
def sigmoid(x):
    # exp(-x) overflows to inf for x < -88 (float32): 1 / inf = 0, no NaN, no cancellation.
    return lit(x, 1.0) / (lit(x, 1.0) + exp_(-x))


@njit(cache=True, inline="always")
def sigmoid_slope(x):
    s = sigmoid(x)
    return s * (lit(x, 1.0) - s)


@njit(cache=True, inline="always")
def silu(x):
    return x * sigmoid(x)


@njit(cache=True, inline="always")
def silu_slope(x):
    s = sigmoid(x)
    return s * (lit(x, 1.0) + x * (lit(x, 1.0) - s))


@njit(cache=True, inline="always")
def gelu(x):
    """Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return lit(x, 0.5) * x * (lit(x, 1.0) + erf_(x * lit(x, INV_SQRT_2)))


@njit(cache=True, inline="always")
def gelu_slope(x):
    """Phi(x) + x phi(x)."""
    cdf = lit(x, 0.5) * (lit(x, 1.0) + erf_(x * lit(x, INV_SQRT_2)))
    return cdf + x * exp_(lit(x, -0.5) * x * x) * lit(x, INV_SQRT_2PI)


@njit(cache=True, inline="always")
def gelu_tanh(x):
    """0.5 * x * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 x^3), computed as x * sigmoid(2u).

    1 + tanh(u) == 2 * sigmoid(2u) exactly; the sigmoid form needs one exp and does not cancel
    for negative u, where 1 + tanh(u) loses all relative precision.
    """
    u = lit(x, SQRT_2_OVER_PI) * (x + lit(x, GELU_TANH_C) * x * x * x)
    return x * sigmoid(lit(x, 2.0) * u)


@njit(cache=True, inline="always")
def gelu_tanh_slope(x):
    """x s with s = sigmoid(2u), u = c0 (x + c1 x^3): s + 2 x s (1 - s) c0 (1 + 3 c1 x^2). Equal
    to Megatron's 0.5 (1 + t) + 0.5 x (1 - t^2) u' with t = tanh(u) = 2s - 1, without the
    cancellation of 1 + t for negative u."""
    c0, c1, one = lit(x, SQRT_2_OVER_PI), lit(x, GELU_TANH_C), lit(x, 1.0)
    s = sigmoid(lit(x, 2.0) * c0 * (x + c1 * x * x * x))
    return s + lit(x, 2.0) * x * s * (one - s) * c0 * (one + lit(x, 3.0) * c1 * x * x)


@njit(cache=True, inline="always")
def tanh(x):
    return tanh_(x)


@njit(cache=True, inline="always")
def tanh_slope(x):
    t = tanh_(x)
    return lit(x, 1.0) - t * t


# ---- dispatch by code (the codes of `activations.CODES`) -------------------------------------

RELU, GELU, GELU_TANH, SILU, SIGMOID, TANH = (CODES[n] for n in ("relu", "gelu", "gelu_tanh", "silu",
                                                                 "sigmoid", "tanh"))


@inline
def activate(x, code):
    """act(x) for an activation code. `code` is the same for a whole loop, so LLVM unswitches
    the branch out of the loop and vectorizes each arm."""
    if code == RELU:
        return relu(x)
    if code == GELU:
        return gelu(x)
    if code == GELU_TANH:
        return gelu_tanh(x)
    if code == SILU:
        return silu(x)
    if code == SIGMOID:
        return sigmoid(x)
    if code == TANH:
        return tanh(x)
    return x


@inline
def derivative(x, code):
    """act'(x) for an activation code."""
    if code == RELU:
        return relu_slope(x)
    if code == GELU:
        return gelu_slope(x)
    if code == GELU_TANH:
        return gelu_tanh_slope(x)
    if code == SILU:
        return silu_slope(x)
    if code == SIGMOID:
        return sigmoid_slope(x)
    if code == TANH:
        return tanh_slope(x)
    return lit(x, 1.0)


@inline
def by_code(code, body, args):
    """body(code, args) with `code` a compile-time constant in each arm.

    A loop that tests a runtime code (or flag) per element does not vectorize, and LLVM does
    not reliably unswitch a six-way branch out of a loop with several other conditions; called
    through here, the loop inside `body` is compiled once per activation, branch-free.
    """
    if code == RELU:
        body(RELU, args)
    elif code == GELU:
        body(GELU, args)
    elif code == GELU_TANH:
        body(GELU_TANH, args)
    elif code == SILU:
        body(SILU, args)
    elif code == SIGMOID:
        body(SIGMOID, args)
    elif code == TANH:
        body(TANH, args)
    else:
        body(0, args)


@inline
def by_flag(flag, body, args):
    """body(flag, args) with `flag` a compile-time constant in each arm (see `by_code`)."""
    if flag:
        body(True, args)
    else:
        body(False, args)


@inline
def by_flags(a, b, body, args):
    """body(a, b, args) with both flags compile-time constants in each arm (see `by_code`)."""
    if a:
        if b:
            body(True, True, args)
        else:
            body(True, False, args)
    elif b:
        body(False, True, args)
    else:
        body(False, False, args)
