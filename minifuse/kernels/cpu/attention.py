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

from .. import checks as shared, validate
from . import checks, mathfn
from .jit import kernel
from .rows import LANES, row_max, row_sum


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


@kernel
def _masked_softmax(s, mask_add, has_mask, scale):
    """s (B, H, Sq, Sk) scores, in place: softmax over the last axis of s * scale + mask_add[b]."""
    nb, nh, sq, sk = s.shape
    if sk == 0:
        return
    for task in prange(nb * nh):
        b = task // nh
        h = task % nh
        lanes = np.empty(LANES, s.dtype)
        for i in range(sq):
            r = s[b, h, i]
            if has_mask:
                m = mask_add[b]
                for j in range(sk):
                    r[j] = r[j] * scale + m[j]
            else:
                for j in range(sk):
                    r[j] = r[j] * scale
            mx = row_max(r, lanes)
            for j in range(sk):               # exp alone in its loop: vectorizes
                r[j] = mathfn.exp_(r[j] - mx)
            inv = mathfn.lit(scale, 1.0) / row_sum(r)
            for j in range(sk):
                r[j] *= inv


def _attention_bmm(q, k, v, madd, has_mask, scale, out):
    """The same attention as `_attention`, as batched BLAS products around `_masked_softmax`:
    faster above a few dozen tokens (dispatch.attention_threshold), at the cost of the
    (B, H, Sq, Sk) scores in memory."""
    scores = np.matmul(q, k.transpose(0, 1, 3, 2))
    _masked_softmax(scores, madd, has_mask, scale)
    np.matmul(scores, v, out=out)


def _mask_add(fn, key_mask, batch, keys, dtype):
    """key_mask (B, Sk), 1/True keep, 0 pad -> additive (B, Sk) of 0 / finfo(dtype).min."""
    if key_mask is None:
        return np.zeros((batch, 0), dtype)   # never read: has_mask is False
    if not isinstance(key_mask, np.ndarray):
        raise TypeError(f"{fn}: 'key_mask' must be a numpy.ndarray or None, got {type(key_mask).__name__}")
    shared.key_mask_values(fn, key_mask, batch, keys)
    return np.where(key_mask == 0, np.finfo(dtype).min, 0).astype(dtype)


def _scale(fn, scale, dtype):
    return dtype.type(shared.real_number(fn, "scale", scale))


METHODS = {"loop": _attention, "bmm": _attention_bmm}


def attention(q, k, v, key_mask, scale, out=None, method="loop"):
    """softmax((q @ k^T) * scale + mask) @ v per (batch, head).

    q (B, H, Sq, D), k, v (B, H, Sk, D), key_mask (B, Sk) (1/True keep, 0 padding) or None;
    padded keys get finfo(dtype).min added to their scores. Returns (B, H, Sq, D).
    method: 'loop' (one kernel, no score matrix) or 'bmm' (batched BLAS products around one
    fused softmax kernel; faster for longer inputs, see dispatch.attention_threshold).
    """
    fn = "attention"
    validate.attention_heads(checks.CHECKS, fn, q, k, v)
    run = checks.choice(fn, "method", method, METHODS)
    madd = _mask_add(fn, key_mask, q.shape[0], k.shape[2], q.dtype)
    scale = _scale(fn, scale, q.dtype)
    out = checks.output(fn, out, q.shape, ("q", q), [("q", q), ("k", k), ("v", v)])
    run(q, k, v, madd, key_mask is not None, scale, out)
    return out


def split_heads(a, offset, width, num_heads):
    """(B, S, *) columns offset:offset+width as a (B, H, S, Dh) strided view (no copy)."""
    nb, s = a.shape[:2]
    return a[:, :, offset:offset + width].reshape(nb, s, num_heads, width // num_heads).transpose(0, 2, 1, 3)


def attention_packed(qkv, key_mask, num_heads, scale, out=None, method="loop"):
    """Attention on the output of one fused QKV projection, result in merged-heads layout.

    qkv (B, S, 3d) = x @ Wqkv.T + b with Wqkv rows [Q; K; V], d = num_heads * Dh, head h in
    columns h*Dh:(h+1)*Dh of each block. Returns context (B, S, d), ready for the output
    projection without any transpose. Same semantics and methods as `attention`.
    """
    fn = "attention_packed"
    run = checks.choice(fn, "method", method, METHODS)
    validate.attention_packed(checks.CHECKS, fn, qkv, num_heads)
    nb, s, width = qkv.shape
    d = width // 3
    madd = _mask_add(fn, key_mask, nb, s, qkv.dtype)
    scale = _scale(fn, scale, qkv.dtype)
    out = checks.output(fn, out, (nb, s, d), ("qkv", qkv), [("qkv", qkv)])
    q, k, v = (split_heads(qkv, i * d, d, num_heads) for i in range(3))
    run(q, k, v, madd, key_mask is not None, scale, split_heads(out, 0, d, num_heads))
    return out
