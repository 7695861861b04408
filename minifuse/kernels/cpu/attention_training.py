"""Kernels of fused attention training (``minifuse.fusions.fused_attention``): the softmax with
its per-row statistics, and the softmax backward from recomputed probabilities.

The products (Q K^T, P V, dO V^T, P^T dO, dS K, dS^T Q) are batched NumPy matmuls outside
these kernels: on this 2-core machine batched BLAS beat Numba loops for the layer's attention
(BENCHMARKS.md), and BLAS inside ``prange`` would oversubscribe the cores. What is left between
the matmuls is row-wise, and each of these kernels does it in one sweep over the score rows:

- forward:  t = s * scale + mask,  m = max_j t,  l = sum_j exp(t - m),  P = exp(t - m) / l,
            written over s in place; m and l are the two numbers per row kept for backward.
            (Not the log-sum-exp m + log l alone: with the additive finfo.min mask, a row whose
            keys are all padded has m = finfo.min, and m + log l rounds back to m.)
- backward: P recomputed from s, m, l exactly as forward (same products, same rounding), then
            dS = P (dP - D) * scale with D = rowsum(dO * O), written over dP; P over s.
The rows of all (batch, head) pairs run in parallel; arguments are checked by the caller.
"""
import numpy as np
from numba import prange

from . import mathfn
from .jit import kernel


@kernel
def softmax_forward(s, mask_add, has_mask, scale, rowmax, rowsum):
    """s (B, H, Sq, Sk) raw scores Q K^T -> probabilities in place; rowmax, rowsum (B, H, Sq)."""
    nb, nh, sq, sk = s.shape
    for task in prange(nb * nh * sq):
        b = task // (nh * sq)
        h = (task // sq) % nh
        i = task % sq
        row = s[b, h, i]
        for j in range(sk):                       # separate loops: the ones without a running
            t = row[j] * scale                    # max or sum vectorize (3x faster than one loop)
            if has_mask:
                t += mask_add[b, j]
            row[j] = t
        mx = -np.inf                              # a NaN score gives exp(NaN): the row becomes NaN
        for j in range(sk):
            mx = row[j] if row[j] > mx else mx
        for j in range(sk):
            row[j] = mathfn.exp_(row[j] - mx)
        total = mathfn.lit(scale, 0.0)
        for j in range(sk):
            total += row[j]
        inv = mathfn.lit(scale, 1.0) / total
        for j in range(sk):
            row[j] *= inv
        rowmax[b, h, i] = mx
        rowsum[b, h, i] = total


@kernel
def softmax_backward(s, dp, mask_add, has_mask, scale, rowmax, rowsum, do, o):
    """s: raw scores Q K^T -> P in place (recomputed); dp: dO V^T -> dS = P (dP - D) * scale in
    place, D = rowsum(dO * O). s, dp (B, H, Sq, Sk); do, o (B, H, Sq, D) (any strides)."""
    nb, nh, sq, sk = s.shape
    dh = o.shape[3]
    for task in prange(nb * nh * sq):
        b = task // (nh * sq)
        h = (task // sq) % nh
        i = task % sq
        d = mathfn.lit(scale, 0.0)
        for c in range(dh):
            d += do[b, h, i, c] * o[b, h, i, c]
        mx = rowmax[b, h, i]
        inv = mathfn.lit(scale, 1.0) / rowsum[b, h, i]
        row = s[b, h, i]
        grow = dp[b, h, i]
        for j in range(sk):
            t = row[j] * scale
            if has_mask:
                t += mask_add[b, j]
            p = mathfn.exp_(t - mx) * inv
            row[j] = p
            grow[j] = p * (grow[j] - d) * scale
