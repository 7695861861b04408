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

Training (``minifuse.fusions.fused_attention``) runs the products as batched NumPy matmuls and
the row-wise work between them here: the softmax keeps two numbers per row, its max m and the
sum l of exp(t - m) (not the log-sum-exp m + log l alone: with the additive finfo.min mask, a row
whose keys are all padded has m = finfo.min, and m + log l rounds back to m); the backward
recomputes P from the raw scores, m and l exactly as forward does, then dS = P (dP - D) * scale
with D = rowsum(dO * O).
"""
import numpy as np
from numba import prange

from .. import validate
from ..layout import split_heads
from . import batched, checks, mathfn
from .jit import inline, kernel
from .rows import LANES, row_max, row_sum

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["attend_packed", "attention", "attention_packed", "from_heads", "mask_add", "softmax_backward",
           "softmax_forward", "to_heads"]


# Query rows per block: the block's scores (ROWS x Sk) and accumulators (ROWS x D) stay in L1,
# and each K^T row / V row loaded from L1 serves ROWS query rows. 4 measured best of 1, 2, 4, 8.
ROWS = 4


@inline
def _head(q, k, v, madd, has_mask, scale, out):
    """One head: q, out (Sq, D), k, v (Sk, D), madd (Sk,) (any strides), rows blocked by ROWS."""
    sq, dh = q.shape
    sk = k.shape[0]
    kt = np.empty((dh, sk), q.dtype)
    vc = np.empty((sk, dh), q.dtype)
    for j in range(sk):
        for d in range(dh):
            kt[d, j] = k[j, d]
            vc[j, d] = v[j, d]
    s = np.empty((ROWS, sk), q.dtype)
    acc = np.empty((ROWS, dh), q.dtype)
    total = np.empty(ROWS, q.dtype)
    for i0 in range(0, sq, ROWS):
        nr = min(ROWS, sq - i0)
        s[:] = 0
        for d in range(dh):               # scores: axpy over keys, K^T row reused nr times
            krow = kt[d]
            for r in range(nr):
                qd = q[i0 + r, d]
                sr = s[r]
                for j in range(sk):
                    sr[j] += qd * krow[j]
        for r in range(nr):
            sr = s[r]
            mx = -np.inf                  # a NaN score gives exp(NaN): the row becomes NaN
            for j in range(sk):
                t = sr[j] * scale
                if has_mask:
                    t += madd[j]
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
                out[i0 + r, d] = acc[r, d] / total[r]


@kernel
def _attention(q, k, v, mask_add, has_mask, scale, out):
    """q, out (B, H, Sq, D); k, v (B, H, Sk, D): any strides (plain or packed views)."""
    nb, nh = q.shape[:2]
    if k.shape[2] == 0:      # no keys: every row is an empty weighted sum, 0 (as P @ v is), not 0 / 0
        out[:] = 0
        return
    for task in prange(nb * nh):
        b = task // nh
        h = task % nh
        _head(q[b, h], k[b, h], v[b, h], mask_add[b], has_mask, scale, out[b, h])


@inline
def _normalize(r, lanes, scale):
    """r <- exp(r - max) / sum, in place; returns (max, sum) (`scale` only gives the dtype)."""
    mx = row_max(r, lanes)
    for j in range(r.shape[0]):           # exp alone in its loop: vectorizes
        r[j] = mathfn.exp_(r[j] - mx)
    total = mathfn.lit(scale, row_sum(r))   # in the scores' dtype: backward recomputes from it
    inv = mathfn.lit(scale, 1.0) / total
    for j in range(r.shape[0]):
        r[j] *= inv
    return mx, total


@kernel
def _masked_softmax(s, mask_add, has_mask, scale, rowmax, rowsum, keep):
    """s (B, H, Sq, Sk) scores, in place: softmax over the last axis of s * scale + mask_add[b];
    with keep (training) also each row's max and sum of exp(t - max) into rowmax, rowsum (B, H, Sq)."""
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
            mx, total = _normalize(r, lanes, scale)
            if keep:
                rowmax[b, h, i] = mx
                rowsum[b, h, i] = total


def softmax_forward(s, mask_add, has_mask, scale, rowmax, rowsum):
    """s (B, H, Sq, Sk) raw scores Q K^T -> probabilities in place; rowmax, rowsum (B, H, Sq)
    get each row's max and sum of exp(t - max). mask_add from `mask_add`."""
    _masked_softmax(s, mask_add, has_mask, s.dtype.type(scale), rowmax, rowsum, True)


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


def _attention_bmm(q, k, v, madd, has_mask, scale, out):
    """The same attention as `_attention`, as batched BLAS products around `_masked_softmax`:
    faster above a few dozen tokens (the 'bmm' method), at the cost of the (B, H, Sq, Sk)
    scores in memory. The products are one small GEMM per (batch, head): `batched.matmul` runs
    them in chunks on a pool of threads, BLAS at one thread each (why: batched.py)."""
    scores = batched.matmul(q, k.transpose(0, 1, 3, 2), np.empty(q.shape[:-1] + (k.shape[2],), q.dtype))
    unused = np.empty((0, 0, 0), scores.dtype)
    _masked_softmax(scores, madd, has_mask, scale, unused, unused, False)
    batched.matmul(scores, v, out)


def mask_add(fn, key_mask, batch, keys, like):
    """key_mask (B, Sk), 1/True keep, 0 pad -> the additive (B, Sk) mask of 0 / finfo(dtype).min in
    the dtype of `like` = (name, array), the argument the mask goes with, or a (B, 0) placeholder
    for no mask (never read: has_mask is False)."""
    like = like[1]
    if key_mask is None:
        return np.zeros((batch, 0), like.dtype)
    if not isinstance(key_mask, np.ndarray):
        raise TypeError(f"{fn}: 'key_mask' must be a numpy.ndarray or None, got {type(key_mask).__name__}")
    checks.key_mask_values(fn, key_mask, batch, keys)
    return np.where(key_mask == 0, np.finfo(like.dtype).min, 0).astype(like.dtype)


METHODS = {"loop": _attention, "bmm": _attention_bmm}


def attend(q, k, v, madd, has_mask, scale, method, out):
    """Checked-arguments entry: out = softmax(q k^T * scale + mask) v; q, out (B, H, Sq, D),
    k, v (B, H, Sk, D), any strides."""
    METHODS[method](q, k, v, madd, has_mask, q.dtype.type(scale), out)
    return out


def to_heads(a, parts, num_heads):
    """a (B, S, parts * d), part p in columns p*d:(p+1)*d, head h of a part in its columns
    h*Dh:(h+1)*Dh -> (parts, B*H, S, Dh), a C-contiguous copy (the batched products' operands)."""
    nb, s, width = a.shape
    d = width // parts
    heads = np.empty((parts, nb * num_heads, s, d // num_heads), a.dtype)
    for p in range(parts):
        heads[p].reshape(nb, num_heads, s, d // num_heads)[...] = split_heads(a, p * d, d, num_heads)
    return heads


def from_heads(heads, out):
    """The inverse of `to_heads`: heads (P, B*H, S, Dh) C-contiguous -> out (B, S, P*d)
    C-contiguous, part p in columns p*d:(p+1)*d with its heads side by side. Returns out."""
    parts, bh, s, dh = heads.shape
    if out.size == 0:
        return out
    nb, d = out.shape[0], out.shape[2] // parts
    for p in range(parts):
        split_heads(out, p * d, d, bh // nb)[...] = heads[p].reshape(nb, bh // nb, s, dh)
    return out


def attend_packed(qkv, madd, has_mask, num_heads, scale, method, out):
    """Checked-arguments entry: the attention of the packed projection qkv (B, S, 3d) into the
    merged-heads context out (B, S, d), through strided head views (no copies)."""
    d = qkv.shape[2] // 3
    q, k, v = (split_heads(qkv, i * d, d, num_heads) for i in range(3))
    METHODS[method](q, k, v, madd, has_mask, qkv.dtype.type(scale), split_heads(out, 0, d, num_heads))
    return out


def attention(q, k, v, key_mask, scale, out=None, method="loop"):
    """softmax((q @ k^T) * scale + mask) @ v per (batch, head).

    q (B, H, Sq, D), k, v (B, H, Sk, D), key_mask (B, Sk) (1/True keep, 0 padding) or None;
    padded keys get finfo(dtype).min added to their scores. Returns (B, H, Sq, D).
    method: 'loop' (one kernel, no score matrix in memory) or 'bmm' (batched BLAS products
    around one fused softmax kernel; faster beyond a few dozen tokens).
    """
    fn = "attention"
    scale, out = validate.attention(checks.CHECKS, fn, q, k, v, scale, method, out)
    madd = mask_add(fn, key_mask, q.shape[0], k.shape[2], ("q", q))
    return attend(q, k, v, madd, key_mask is not None, scale, method, out)


def attention_packed(qkv, key_mask, num_heads, scale, out=None, method="loop"):
    """Attention on the output of one fused QKV projection, result in merged-heads layout.

    qkv (B, S, 3d) = x @ Wqkv.T + b with Wqkv rows [Q; K; V], d = num_heads * Dh, head h in
    columns h*Dh:(h+1)*Dh of each block. Returns context (B, S, d), ready for the output
    projection without any transpose. Same semantics and methods as `attention`.
    """
    fn = "attention_packed"
    scale, out = validate.attention_packed(checks.CHECKS, fn, qkv, num_heads, scale, method, out)
    nb, s = qkv.shape[:2]
    madd = mask_add(fn, key_mask, nb, s, ("qkv", qkv))
    return attend_packed(qkv, madd, key_mask is not None, num_heads, scale, method, out)
