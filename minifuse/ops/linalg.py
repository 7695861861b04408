"""Matrix multiplication: batched, broadcasting, with NumPy's rules for 1-D operands."""
import math

import numpy as np

from ..autograd.function import Function
from ..dtypes import bfloat16
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
    In a's dtype: NumPy returns ml_dtypes' bfloat16 products as float32. CuPy has 2-D bfloat16
    GEMMs but no batched ones: a batch of bfloat16 products runs in float32 there (one rounding
    to bfloat16 at the end, as a float32-accumulating GEMM would give)."""
    if b.ndim == 2 and a.ndim > 2:
        out = (a.reshape(math.prod(a.shape[:-1]), a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
    elif xp is not np and max(a.ndim, b.ndim) > 2 and a.dtype == bfloat16:
        out = xp.matmul(a.astype(np.float32), b.astype(np.float32))
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
                gb = _matmul(xp, xp.swapaxes(a2, -1, -2), g)
            if b.ndim == 1:
                gb = gb[..., 0]
            gb = gb if gb.dtype == b.dtype else gb.astype(b.dtype)
        return ga, gb


def parse_einsum(equation, ndims):
    """``equation`` with every '...' spelled out as letters and the output written explicitly
    (implicit form: the letters that occur once, sorted, after the ellipsis dims, as NumPy and
    PyTorch). Returns (input subscripts, output subscripts)."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(ndims):
        raise ValueError(f"einsum: equation {equation!r} names {len(subs)} operands, got {len(ndims)}")
    letters = set(eq) - set(".,->")
    if not all(c.isalpha() for c in letters):
        raise ValueError(f"einsum: subscripts must be letters, got {equation!r}")
    spare = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in letters]
    n_ell = max([n - len(s.replace("...", "")) for s, n in zip(subs, ndims) if "..." in s] or [0])
    ell = "".join(spare[:n_ell])
    spelled = []
    for i, (s, n) in enumerate(zip(subs, ndims)):
        k = n - len(s.replace("...", ""))
        if "..." in s:
            s = s.replace("...", ell[n_ell - k:] if k > 0 else "")
        if len(s) != n:
            raise ValueError(f"einsum: operands[{i}] has {n} dimensions but its subscripts {subs[i]!r} "
                             f"name {len(s)}")
        if len(set(s)) != len(s):
            raise ValueError(f"einsum: operands[{i}] repeats a subscript in {subs[i]!r} (diagonals are "
                             f"not supported)")
        spelled.append(s)
    if arrow:
        out = out.replace("...", ell)
    else:
        joined = "".join(spelled)
        out = ell + "".join(sorted(c for c in letters if joined.count(c) == 1))
    if len(set(out)) != len(out) or not set(out) <= set("".join(spelled)):
        raise ValueError(f"einsum: the output subscripts of {equation!r} must be distinct letters of the inputs")
    return spelled, out


def _einsum(xp, equation, *operands):
    """xp.einsum in the operands' dtype; NumPy's einsum has no bfloat16 loop, so bfloat16
    operands are multiplied in float32 (as NumPy's matmul does for them) and rounded back."""
    dtype = operands[0].dtype
    if bfloat16 is not None and dtype == bfloat16:
        return xp.einsum(equation, *(o.astype(xp.float32) for o in operands)).astype(dtype)
    return xp.einsum(equation, *operands)


class Einsum(Function):
    """out = einsum(equation, *operands). The gradient of operand i is the einsum of g with the
    other operands into operand i's subscripts; letters that only operand i has (summed away)
    are broadcast back."""
    name = "einsum"
    autocast = "lower"

    @staticmethod
    def forward(ctx, equation, *operands):
        subs, out = parse_einsum(equation, [o.ndim for o in operands])
        ctx.subs, ctx.out = subs, out
        ctx.save_for_backward(*operands)
        return _einsum(ctx.xp, ",".join(subs) + "->" + out, *operands)

    @staticmethod
    def backward(ctx, g):
        operands, xp = ctx.saved_tensors, ctx.xp
        grads = [None]
        for i, (s, x) in enumerate(zip(ctx.subs, operands)):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            others = [j for j in range(len(operands)) if j != i]
            seen = set(ctx.out).union(*(ctx.subs[j] for j in others))
            kept = "".join(c for c in s if c in seen)
            eq = ",".join([ctx.out] + [ctx.subs[j] for j in others]) + "->" + kept
            gi = _einsum(xp, eq, g.astype(x.dtype, copy=False), *(operands[j] for j in others))
            if kept != s:   # letters summed away in the forward: every element got the same g
                gi = xp.expand_dims(gi, tuple(k for k, c in enumerate(s) if c not in seen))
                gi = xp.broadcast_to(gi, tuple(n if c not in seen else m
                                               for c, n, m in zip(s, x.shape, gi.shape)))
            grads.append(gi.astype(x.dtype, copy=False))
        return tuple(grads)
