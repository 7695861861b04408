"""Matrix multiplication: batched, broadcasting, with NumPy's rules for 1-D operands."""
import math

from ..autograd.function import Function
from ._util import check_broadcast


def check_matmul(op, a_shape, b_shape, names=("input", "other")):
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ValueError(f"{op}: both arguments must have at least 1 dimension, got '{names[0]}' "
                         f"{tuple(a_shape)} and '{names[1]}' {tuple(b_shape)}")
    k_a = a_shape[-1]
    k_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if k_a != k_b:
        raise ValueError(f"{op}: inner dimensions differ: '{names[0]}' {tuple(a_shape)} @ '{names[1]}' "
                         f"{tuple(b_shape)} ({k_a} != {k_b})")
    if len(a_shape) > 2 or len(b_shape) > 2:
        check_broadcast(op, a_shape[:-2], b_shape[:-2], names)


def _matmul(xp, a, b):
    """a @ b; a batch of rows times one matrix runs as ONE 2-D GEMM on the flattened rows
    (NumPy's batched matmul would call BLAS once per batch entry: about 2x slower for linear).
    In a's dtype: NumPy returns ml_dtypes' bfloat16 products as float32."""
    if b.ndim == 2 and a.ndim > 2:
        out = (a.reshape(math.prod(a.shape[:-1]), a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
    else:
        out = xp.matmul(a, b)
    return out if out.dtype == a.dtype else out.astype(a.dtype)


class MatMul(Function):
    """out = input @ other; d input = g @ other^T, d other = input^T @ g (summed over batch)."""
    autocast = "lower"        # under mf.autocast: float32 operands in half precision

    @classmethod
    def apply(cls, input, other):
        check_matmul("matmul", input.shape, other.shape)
        return super().apply(input, other)

    @staticmethod
    def forward(ctx, input, other):
        ctx.save_for_backward(input, other)
        return _matmul(ctx.xp, input, other)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need_a, need_b = ctx.needs_input_grad
        # promote 1-D operands to matrices so that one rule covers every case
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            g = xp.expand_dims(g, -1)
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        ga = gb = None
        if need_a:
            ga = _matmul(xp, g, xp.swapaxes(b2, -1, -2))
            if a.ndim == 1:
                ga = ga.reshape(ga.shape[:-2] + (ga.shape[-1],))
        if need_b:
            if b2.ndim == 2 and a2.ndim > 2:
                # weight shared across a batch: one GEMM over the flattened rows, no (batch, K, N) temp
                gb = a2.reshape(math.prod(a2.shape[:-1]), a2.shape[-1]).T @ g.reshape(math.prod(g.shape[:-1]), g.shape[-1])
            else:
                gb = xp.matmul(xp.swapaxes(a2, -1, -2), g)
            if b.ndim == 1:
                gb = gb[..., 0]
            gb = gb if gb.dtype == b.dtype else gb.astype(b.dtype)
        return ga, gb
