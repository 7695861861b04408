"""Fused activations for training: bias + GELU, and SwiGLU with Megatron-LM's semantics
(``core.fusions.fused_bias_gelu`` / ``fused_bias_swiglu``).

Each is one ``Function``: one node on the tape, one kernel forward, one kernel backward that
also reduces the bias (and per-token weight) gradients. What is saved is the input only (the
pre-activation ``y``; the bias is a parameter, held anyway): backward recomputes ``y + bias``
and the activation's slope from it, which costs a few flops per element and no memory.
``input_store_dtype=float16`` keeps that saved input in half precision (Megatron's
``fp8_input_store``): half the bytes, gradients evaluated at the rounded input.
The kernels are those of the tensors' backend (``minifuse.kernels.registry``): one code for the
CPU and CUDA.
"""
from ..autograd.function import Function
from . import _args as A

__all__ = ["bias_gelu", "swiglu", "bias_swiglu", "weighted_swiglu", "BiasAct", "GatedUnit"]

_GELU = {"tanh": "gelu_tanh", "none": "gelu"}


class BiasAct(Function):
    """out = act(y + bias); dy = g * act'(y + bias), dbias = sum of dy over all leading dims."""

    autocast = "lower"        # under mf.autocast: a GEMM's epilogue, in the autocast dtype

    @staticmethod
    def forward(ctx, y, bias, activation, store_dtype=None):
        K = A.kernels(y)
        xp = K.xp
        y2 = A.rows(xp, y, y.shape[-1])
        bias = A.optional(xp, bias)
        out = K.apply_bias_act(y2, bias, activation, xp.empty(y2.shape, y.dtype))
        ctx.save_for_backward(A.store(y2, store_dtype), bias)
        ctx.meta = (K, activation, y.shape, y.dtype)
        return out.reshape(y.shape)

    @staticmethod
    def backward(ctx, g):
        y2, bias = ctx.saved_tensors
        K, activation, shape, dtype = ctx.meta
        xp = K.xp
        want_db = bias is not None and ctx.needs_input_grad[1]
        dy = xp.empty(y2.shape, dtype)
        db = xp.empty(shape[-1], dtype) if want_db else None
        K.bias_act_backward(A.rows(xp, g, shape[-1]), A.restore(y2, dtype), bias, activation, dy, db)
        return dy.reshape(shape), db


def bias_gelu(y, bias, approximate="tanh", input_store_dtype=None):
    """GELU(y + bias) over the last dim, bias (M,) or None, any number of leading dims.

    approximate='tanh': 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) (Megatron's, the default);
    'none': z Phi(z). Backward: dy = g GELU'(z), dbias = sum(dy) over the leading dims.
    """
    fn = "bias_gelu"
    y, bias = A.autocast(fn, BiasAct, y, bias)
    A.choice(fn, "approximate", approximate, _GELU)
    A.tensor(fn, "y", y, min_ndim=1)
    A.vector(fn, "bias", bias, y.shape[-1], "(M,) with M = y.shape[-1]", ("y", y))
    return BiasAct.apply(y, bias, _GELU[approximate], A.store_dtype(fn, input_store_dtype, y.dtype))


class GatedUnit(Function):
    """out = gate(a) * b (* w), [a | b] = y + bias split at the middle of the last dim, the FIRST
    half the gate, gate = silu (SwiGLU) or sigmoid (GLU), w a per-row weight (..., 1).

        da = g w gate'(a) b,  db = g w gate(a),  dbias = sum over rows of [da | db],
        dw = sum_j gate(a) b g   (Megatron's weighted_swiglu_back).
    """

    autocast = "lower"

    @staticmethod
    def forward(ctx, y, bias, weights, gate, store_dtype=None):
        K = A.kernels(y)
        xp = K.xp
        width = y.shape[-1]
        y2 = A.rows(xp, y, width)
        n, h = y2.shape[0], width // 2
        bias = A.optional(xp, bias)
        w = None if weights is None else A.rows(xp, weights, 1).reshape(n)
        out = K.apply_bias_glu(y2, bias, gate, xp.empty((n, h), y.dtype), w)
        ctx.save_for_backward(A.store(y2, store_dtype), bias, w)
        ctx.meta = (K, gate, y.shape, y.dtype, None if weights is None else weights.shape)
        return out.reshape(y.shape[:-1] + (h,))

    @staticmethod
    def backward(ctx, g):
        y2, bias, w = ctx.saved_tensors
        K, gate, shape, dtype, w_shape = ctx.meta
        xp = K.xp
        n, h = y2.shape[0], shape[-1] // 2
        want_db = bias is not None and ctx.needs_input_grad[1]
        dy = xp.empty(y2.shape, dtype)
        db = xp.empty(2 * h, dtype) if want_db else None
        dw = None if w is None else xp.empty(n, dtype)
        K.glu_backward(A.rows(xp, g, h), A.restore(y2, dtype), bias, gate, w, dy, db, dw)
        return dy.reshape(shape), db, (None if w is None else dw.reshape(w_shape))


def _gated(fn, y, bias, weights, input_store_dtype, gate="silu"):
    y, bias, weights = A.autocast(fn, GatedUnit, y, bias, weights)
    A.tensor(fn, "y", y, min_ndim=1)
    if y.shape[-1] % 2:
        raise ValueError(f"{fn}: 'y' last dim must be even (2H: gate half, value half), got shape {y.shape}")
    A.vector(fn, "bias", bias, y.shape[-1], "(2H,) with 2H = y.shape[-1]", ("y", y))
    if weights is not None:
        A.tensor(fn, "weights", weights, ("y", y))
        expected = y.shape[:-1] + (1,)
        if weights.shape != expected:
            raise ValueError(f"{fn}: 'weights' has shape {weights.shape}, expected one weight per row "
                             f"y.shape[:-1] + (1,) = {expected}")
    return GatedUnit.apply(y, bias, weights, gate, A.store_dtype(fn, input_store_dtype, y.dtype))


def swiglu(y, input_store_dtype=None):
    """SwiGLU: silu(y1) * y2 with y1, y2 the first and second half of y's last dim."""
    return _gated("swiglu", y, None, None, input_store_dtype)


def bias_swiglu(y, bias, input_store_dtype=None):
    """swiglu(y + bias), bias (2H,) or None; the bias gradient is summed over all leading dims."""
    return _gated("bias_swiglu", y, bias, None, input_store_dtype)


def weighted_swiglu(y, weights, input_store_dtype=None):
    """swiglu(y) * weights with one weight per row, weights of shape y.shape[:-1] + (1,) (MoE
    routing probabilities). Weight gradient: sum(swiglu(y) * g, -1, keepdim=True)."""
    return _gated("weighted_swiglu", y, None, weights, input_store_dtype)
