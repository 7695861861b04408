"""Scaled dot-product attention with a key-padding mask, one (batch, head) at a time.

Semantics (the unfused path, exactly): scores = (q @ k^T) * scale; where key_mask == 0 add
finfo(dtype).min (additive, like Hugging Face BERT); P = softmax over keys (max subtracted);
out = P @ v.

Unfused, scores and P are two (B, H, Sq, Sk) arrays (BERT-base B=8, S=128: 6 MB each, float32)
written and re-read by the mask add, max, subtract, exp, sum and divide passes. Here the
only score storage is one row of Sk values per query row, in L1: each row's scores, softmax and
weighted sum of values are done before the next row starts. K is transposed once per (batch,
head) into a small scratch so the score loop is a contiguous axpy over keys (vectorizes, no
horizontal sums), and V is copied to a contiguous scratch (the packed layout strides it).
The (batch, head) pairs run in parallel.
"""
import math

import numpy as np
from numba import prange

from . import checks, mathfn
from .jit import kernel


# Query rows per block: the block's scores (ROWS x Sk) and accumulators (ROWS x D) stay in L1,
# and each K^T row / V row loaded from L1 serves ROWS query rows. 4 measured best of 1, 2, 4, 8.
ROWS = 4


@kernel
def _attention(q, k, v, mask_add, has_mask, scale, out):
    """q, out (B, H, Sq, D); k, v (B, H, Sk, D): any strides (plain or packed views)."""
    nb, nh, sq, dh = q.shape
    sk = k.shape[2]
    for task in prange(nb * nh):
        b = task // nh
        h = task % nh
        kt = np.empty((dh, sk), q.dtype)
        vc = np.empty((sk, dh), q.dtype)
        for j in range(sk):
            for d in range(dh):
                kt[d, j] = k[b, h, j, d]
                vc[j, d] = v[b, h, j, d]
        s = np.empty((ROWS, sk), q.dtype)
        acc = np.empty((ROWS, dh), q.dtype)
        total = np.empty(ROWS, q.dtype)
        for i0 in range(0, sq, ROWS):
            nr = min(ROWS, sq - i0)
            s[:] = 0
            for d in range(dh):               # scores: axpy over keys, K^T row reused nr times
                krow = kt[d]
                for r in range(nr):
                    qd = q[b, h, i0 + r, d]
                    sr = s[r]
                    for j in range(sk):
                        sr[j] += qd * krow[j]
            for r in range(nr):
                sr = s[r]
                mx = -np.inf                  # a NaN score gives exp(NaN): the row becomes NaN
                for j in range(sk):
                    t = sr[j] * scale
                    if has_mask:
                        t += mask_add[b, j]
                    sr[j] = t
                    mx = t if t > mx else mx
                for j in range(sk):
                    sr[j] = mathfn.exp_(sr[j] - mx)
            acc[:] = 0
            total[:] = 0
            for j in range(sk):               # weighted sum of V rows, V row reused nr times
                vrow = vc[j]
                for r in range(nr):
                    p = s[r, j]
                    total[r] += p
                    ar = acc[r]
                    for d in range(dh):
                        ar[d] += p * vrow[d]
            for r in range(nr):
                for d in range(dh):
                    out[b, h, i0 + r, d] = acc[r, d] / total[r]
