"""Scaled dot-product attention with a key-padding mask on CUDA.

Semantics (those of the CPU kernel and the unfused path): scores = (q @ k^T) * scale; where
key_mask == 0 add finfo(dtype).min; P = softmax over keys (max subtracted); out = P @ v.

The two products are strided batched GEMMs, one per (batch, head) in a single call: cuBLASLt
(cublaslt.py, so that a CUDA graph can capture them) on contiguous copies of q, k, v (CuPy's
matmul makes the same copies), CuPy's cuBLAS matmul where cuBLASLt does not apply. Between
them, ONE numba kernel (rowwise.masked_softmax) does what the unfused path does in six passes
over the (B, H, Sq, Sk) scores (scale, mask add, max, subtract+exp, sum, divide): one read and
one write of the scores, in place. A flash-attention kernel (scores never in memory) would also
save that pass, but in float32 without tensor cores a numba kernel loses more on the products
than it saves: at BERT-base B=32, S=128 the scores are 25 MB, about 17 us of traffic on an H100.
"""
import math

import numpy as np

from .. import validate
from . import checks, cublaslt
from .rowwise import apply_masked_softmax
from .runtime import xp_for


def _attend(xp, q, k, v, key_mask, scale, out):
    """out[...] = softmax(q k^T * scale + mask) v for q (B, H, Sq, D), k, v (B, H, Sk, D)."""
    nb, nh, sq, dh = q.shape
    sk = k.shape[2]
    if xp is not np:   # strided batched cuBLASLt GEMMs (capturable); q, k, v made contiguous first
        q3, k3, v3 = (checks.contiguous(xp, t).reshape(nb * nh, -1, dh) for t in (q, k, v))
        scores = xp.empty((nb * nh, sq, sk), q.dtype)
        ctx = xp.empty((nb * nh, sq, dh), q.dtype)
        if cublaslt.bmm(q3, k3, scores, trans_b=True):
            apply_masked_softmax(xp, scores.reshape(-1, sk), nh * sq, key_mask, scale)
            if cublaslt.bmm(scores, v3, ctx):
                ctx = ctx.reshape(nb, nh, sq, dh)
                if out is None:
                    return ctx
                out[...] = ctx
                return out
    scores = xp.matmul(q, xp.swapaxes(k, -1, -2))                 # (B, H, Sq, Sk), cuBLAS
    apply_masked_softmax(xp, scores.reshape(-1, sk), nh * sq, key_mask, scale)
    return xp.matmul(scores, v, out=out)


# The CPU kernels' `method` choices. Here both are the one implementation: batched cuBLAS
# products around one fused softmax kernel (the CPU's 'bmm'; a GPU has no use for 'loop').
METHODS = ("loop", "bmm")


def attention(q, k, v, key_mask, scale, out=None, method="loop"):
    """softmax((q @ k^T) * scale + mask) @ v per (batch, head).

    q (B, H, Sq, D), k, v (B, H, Sk, D), key_mask (B, Sk) (1/True keep, 0 padding) or None;
    padded keys get finfo(dtype).min added to their scores. Returns (B, H, Sq, D).
    method: accepted for the CPU kernels' signature; see METHODS.
    """
    fn = "attention"
    checks.choice(fn, "method", method, {m: m for m in METHODS})
    validate.attention_heads(checks.CHECKS, fn, q, k, v)
    xp = xp_for(fn, "q", q)
    like = ("q", q)
    key_mask = checks.key_mask(fn, key_mask, q.shape[0], k.shape[2], like)
    scale = checks.scale(fn, scale)
    out = checks.output(fn, out, q.shape, like, [("q", q), ("k", k), ("v", v)])
    return _attend(xp, q, k, v, key_mask, scale, out)


def packed(xp, qkv, key_mask, num_heads, scale, out):
    """Checked-arguments entry of attention_packed (also used by transformer_layer)."""
    nb, s, width = qkv.shape
    d = width // 3
    # q, k, v as contiguous (B, H, S, Dh) blocks of ONE copy (3, B, H, S, Dh): one copy kernel, not three
    heads = checks.contiguous(xp, qkv.reshape(nb, s, 3, num_heads, d // num_heads).transpose(2, 0, 3, 1, 4))
    ctx = _attend(xp, heads[0], heads[1], heads[2], key_mask, scale, None)   # (B, H, S, Dh)
    out.reshape(nb, s, num_heads, d // num_heads)[...] = ctx.transpose(0, 2, 1, 3)
    return out


def attention_packed(qkv, key_mask, num_heads, scale, out=None, method="loop"):
    """Attention on the output of one fused QKV projection, result in merged-heads layout.

    qkv (B, S, 3d) = x @ Wqkv.T + b with Wqkv rows [Q; K; V], d = num_heads * Dh, head h in
    columns h*Dh:(h+1)*Dh of each block. Returns context (B, S, d). Same semantics as `attention`.
    """
    fn = "attention_packed"
    checks.choice(fn, "method", method, {m: m for m in METHODS})
    validate.attention_packed(checks.CHECKS, fn, qkv, num_heads)
    xp = xp_for(fn, "qkv", qkv)
    like = ("qkv", qkv)
    nb, s, width = qkv.shape
    key_mask = checks.key_mask(fn, key_mask, nb, s, like)
    scale = checks.scale(fn, scale)
    out = checks.output(fn, out, (nb, s, width // 3), like, [("qkv", qkv)])
    return packed(xp, qkv, key_mask, num_heads, scale, out)


def default_scale(head_dim):
    return 1.0 / math.sqrt(head_dim)
