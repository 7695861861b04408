"""Kernels of fused attention training on CUDA: the same entry points and signatures as
`minifuse.kernels.cpu.attention_training` (``minifuse.fusions.fused_attention`` calls them
between its batched cuBLAS products).

- forward: the inference softmax kernel (`rowwise.masked_softmax`, one block per score row, the
  row in registers) with the per-row max m and sum l of exp(t - m) kept for backward.
- backward: one block per score row; D = rowsum(dO * O) by a block reduction over the head
  dimension, then P recomputed from the raw scores, m and l exactly as forward computes it, and
  dS = P (dP - D) * scale written over dP, P over the scores.
"""
import functools
import math

import numpy as np

from . import checks
from .mathfn import compute_dtype
from .rowwise import MAX_THREADS, _block_sum, launch_masked_softmax, mask_add as _mask_add
from .runtime import SIMULATOR, cuda, launch, row_threads, xp_for

__all__ = ["softmax_forward", "softmax_backward", "mask_add"]


def mask_add(fn, key_mask, batch, keys, like):
    """key_mask (B, Sk), 1/True keep, 0 pad -> additive (B, Sk) of 0 / finfo(dtype).min on the device
    of `like` (a host mask is copied there), or a (1, 1) placeholder for no mask."""
    xp = xp_for(fn, "qkv", like)
    if key_mask is None:
        return xp.zeros((1, 1), like.dtype)         # never read: has_mask is False
    return _mask_add(xp, checks.key_mask(fn, key_mask, batch, keys, ("qkv", like)), like.dtype)


def softmax_forward(s, mask_add, has_mask, scale, rowmax, rowsum):
    """s (B, H, Sq, Sk) raw scores Q K^T, C-contiguous -> probabilities in place; rowmax, rowsum
    (B, H, Sq)."""
    nb, nh, sq, sk = s.shape
    if not s.flags.c_contiguous:   # the kernel works on the (rows, Sk) view, which must not be a copy
        raise ValueError(f"softmax_forward: 's' must be C-contiguous, got strides {s.strides}")
    launch_masked_softmax(s.reshape(-1, sk), nh * sq, mask_add, has_mask, scale,
                          rowmax.reshape(-1), rowsum.reshape(-1))


@functools.lru_cache(maxsize=None)
def _softmax_backward_kernel(ct):
    ctype = np.dtype(ct).type
    block_sum = _block_sum
    zero = ctype(0)

    @cuda.jit
    def softmax_backward(s, dp, mask_add, has_mask, scale, rowmax, rowsum, do, o):
        nb, nh, sq, sk = s.shape
        dh = o.shape[3]
        row = cuda.blockIdx.x
        b = row // (nh * sq)
        h = (row // sq) % nh
        i = row % sq
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        buf = cuda.shared.array(MAX_THREADS, ctype)
        part = zero
        c = tid
        while c < dh:
            part += ctype(do[b, h, i, c]) * ctype(o[b, h, i, c])
            c += nt
        d = block_sum(buf, part)
        mx = ctype(rowmax[b, h, i])
        inv = ctype(1) / ctype(rowsum[b, h, i])
        j = tid
        while j < sk:
            t = ctype(s[b, h, i, j]) * scale
            if has_mask:
                t += mask_add[b, j]
            p = math.exp(t - mx) * inv
            s[b, h, i, j] = p
            dp[b, h, i, j] = p * (ctype(dp[b, h, i, j]) - d) * scale
            j += nt
    return softmax_backward


def softmax_backward(s, dp, mask_add, has_mask, scale, rowmax, rowsum, do, o):
    """s: raw scores Q K^T -> P in place (recomputed); dp: dO V^T -> dS = P (dP - D) * scale in
    place, D = rowsum(dO * O). s, dp (B, H, Sq, Sk); do, o (B, H, Sq, D) (any strides)."""
    nb, nh, sq, sk = s.shape
    rows = nb * nh * sq
    if rows == 0:
        return
    if SIMULATOR:   # it transfers only contiguous NumPy arrays; numba on a GPU takes the strided views
        do, o = np.ascontiguousarray(do), np.ascontiguousarray(o)
    ct = compute_dtype(s.dtype)
    launch(_softmax_backward_kernel(ct), rows, row_threads(max(sk, o.shape[3])), s, dp, mask_add, has_mask,
           ct.type(scale), rowmax, rowsum, do, o)
