"""Fused activations for training: bias + GELU, and SwiGLU with Megatron-LM's semantics
(``core.fusions.fused_bias_gelu`` / ``fused_bias_swiglu``).

Each is one ``Function``: one node on the tape, one kernel forward, one kernel backward that
also reduces the bias (and per-token weight) gradients. What is saved is the input only (the
pre-activation ``y``; the bias is a parameter, held anyway): backward recomputes ``y + bias``
and the activation's slope from it, which costs a few flops per element and no memory.
``input_store_dtype=float16`` keeps that saved input in half precision (Megatron's
``fp8_input_store``): half the bytes, gradients evaluated at the rounded input.
On CUDA tensors the same code runs the CUDA kernels of the same names (``_kernels``).
"""
from ..autograd.function import Function
from ..kernels.cpu.epilogue import ACTIVATIONS
from ..kernels.cpu.glu import GATES
from . import _args as A
from . import _kernels

__all__ = ["bias_gelu", "swiglu", "bias_swiglu", "weighted_swiglu", "BiasAct", "GatedUnit"]

_GELU = {"tanh": ACTIVATIONS["gelu_tanh"], "none": ACTIVATIONS["gelu"]}


class BiasAct(Function):
    """out = act(y + bias); dy = g * act'(y + bias), dbias = sum of dy over all leading dims."""

    @staticmethod
    def forward(ctx, y, bias, code, store_dtype=None):
        K = _kernels.kernels(y)
        xp = K.xp
        y2 = A.rows(xp, y, y.shape[-1])
        bias = A.contiguous(xp, bias)
        out = xp.empty(y2.shape, y.dtype)
        K.training.bias_act_forward(y2, A.or_empty(xp, bias, y.dtype), bias is not None, code, out)
        ctx.save_for_backward(A.store(y2, store_dtype), bias)
        ctx.meta = (K, code, y.shape, y.dtype)
        return out.reshape(y.shape)

    @staticmethod
    def backward(ctx, g):
        y2, bias = ctx.saved_tensors
        K, code, shape, dtype = ctx.meta
        xp = K.xp
        want_db = bias is not None and ctx.needs_input_grad[1]
        dy = xp.empty(y2.shape, dtype)
        db = xp.empty(shape[-1] if want_db else 0, dtype)
        K.training.bias_act_backward(A.rows(xp, g, shape[-1]), A.restore(y2, dtype), A.or_empty(xp, bias, dtype),
                                     bias is not None, code, dy, db, want_db)
        return dy.reshape(shape), (db if want_db else None)


def bias_gelu(y, bias, approximate="tanh", input_store_dtype=None):
    """GELU(y + bias) over the last dim, bias (M,) or None, any number of leading dims.

    approximate='tanh': 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) (Megatron's, the default);
    'none': z Phi(z). Backward: dy = g GELU'(z), dbias = sum(dy) over the leading dims.
    """
    fn = "bias_gelu"
    code = A.choice(fn, "approximate", approximate, _GELU)
    A.tensor(fn, "y", y, min_ndim=1)
    A.vector(fn, "bias", bias, y.shape[-1], "(M,) with M = y.shape[-1]", ("y", y))
    return BiasAct.apply(y, bias, code, A.store_dtype(fn, input_store_dtype, y.dtype))


class GatedUnit(Function):
    """out = gate(a) * b (* w), [a | b] = y + bias split at the middle of the last dim, the FIRST
    half the gate, gate = silu (SwiGLU) or sigmoid (GLU), w a per-row weight (..., 1).

        da = g w gate'(a) b,  db = g w gate(a),  dbias = sum over rows of [da | db],
        dw = sum_j gate(a) b g   (Megatron's weighted_swiglu_back).
    """

    @staticmethod
    def forward(ctx, y, bias, weights, silu, store_dtype=None):
        K = _kernels.kernels(y)
        xp = K.xp
        width = y.shape[-1]
        y2 = A.rows(xp, y, width)
        n, h = y2.shape[0], width // 2
        bias = A.contiguous(xp, bias)
        w = None if weights is None else A.rows(xp, weights, 1).reshape(n)
        out = xp.empty((n, h), y.dtype)
        if w is not None:
            K.training.weighted_glu_forward(y2, silu, w, out)
        elif n:
            K.bias_glu(y2, bias, GATES["silu" if silu else "sigmoid"], out)
        ctx.save_for_backward(A.store(y2, store_dtype), bias, w)
        ctx.meta = (K, silu, y.shape, y.dtype, None if weights is None else weights.shape)
        return out.reshape(y.shape[:-1] + (h,))

    @staticmethod
    def backward(ctx, g):
        y2, bias, w = ctx.saved_tensors
        K, silu, shape, dtype, w_shape = ctx.meta
        xp = K.xp
        n, h = y2.shape[0], shape[-1] // 2
        want_db = bias is not None and ctx.needs_input_grad[1]
        dy = xp.empty(y2.shape, dtype)
        db = xp.empty(2 * h if want_db else 0, dtype)
        dw = xp.empty(n if w is not None else 0, dtype)
        K.training.glu_backward(A.rows(xp, g, h), A.restore(y2, dtype), A.or_empty(xp, bias, dtype),
                                bias is not None, silu, xp.ones(n, dtype) if w is None else w, w is not None,
                                dy, db, want_db, dw)
        return dy.reshape(shape), (db if want_db else None), (None if w is None else dw.reshape(w_shape))


def _gated(fn, y, bias, weights, input_store_dtype, silu=True):
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
    return GatedUnit.apply(y, bias, weights, silu, A.store_dtype(fn, input_store_dtype, y.dtype))


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
