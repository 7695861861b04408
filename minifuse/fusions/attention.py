"""Fused attention for training, flash-attention style: one node on the tape that saves the
packed projection qkv, the output and two numbers per query row, and recomputes the
probabilities in backward.

The taped path (``nn.MultiHeadAttention._attend``) records split, reshape, permute, two matmuls,
scale, mask add and softmax, and keeps the scores' inputs and the (B, H, S, S) probabilities for
backward (BERT-base B=8, S=128: 6 MB of probabilities plus copies of q, k, v). Here nothing of
size S x S is kept: backward redoes Q K^T (one small batched GEMM) and the exp.

Per (batch, head), with t = Q K^T * scale + mask, P = softmax(t), O = P V (derivation in
docs/fused-training.md):

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dO * O)),
    dQ = dS K * scale,   dK = dS^T Q * scale.

The products are batched NumPy matmuls on strided views of the packed arrays (no copies into
head-major layout); the row-wise softmax and dS are one kernel each (``softmax_forward`` and
``softmax_backward`` of the tensors' kernel backend, ``minifuse/kernels/{cpu,cuda}/attention.py``).
On CUDA tensors the products are batched cuBLAS GEMMs (CuPy).
"""

import numpy as np

from ..autograd.function import Function, mixed_devices
from ..kernels.checks import real_number
from ..kernels.layout import head_scale, split_heads
from ..tensor import Tensor
from . import _args as A

__all__ = ["fused_attention", "FusedAttention"]


def _heads(a, num_heads):
    """(B, S, 3d) packed -> the q, k, v (B, H, S, Dh) strided views."""
    d = a.shape[2] // 3
    return [split_heads(a, i * d, d, num_heads) for i in range(3)]


class FusedAttention(Function):
    """context = concat_h softmax(Q_h K_h^T * scale + mask) V_h from the packed qkv (B, S, 3d)."""

    @staticmethod
    def forward(ctx, qkv, mask_add, has_mask, num_heads, scale):
        K = A.kernels(qkv)
        xp = K.xp
        qkv = xp.ascontiguousarray(qkv)
        nb, s, d3 = qkv.shape
        q, k, v = _heads(qkv, num_heads)
        scores = xp.matmul(q, k.transpose(0, 1, 3, 2))
        rowmax = xp.empty((nb, num_heads, s), qkv.dtype)
        rowsum = xp.empty((nb, num_heads, s), qkv.dtype)
        K.softmax_forward(scores, mask_add, has_mask, scale, rowmax, rowsum)
        out = xp.empty((nb, s, d3 // 3), qkv.dtype)
        xp.matmul(scores, v, out=split_heads(out, 0, d3 // 3, num_heads))
        ctx.save_for_backward(qkv, out, rowmax, rowsum, mask_add)
        ctx.meta = (K, has_mask, num_heads, scale)
        return out

    @staticmethod
    def backward(ctx, g):
        qkv, out, rowmax, rowsum, mask_add = ctx.saved_tensors
        K, has_mask, num_heads, scale = ctx.meta
        xp = K.xp
        d = out.shape[2]
        q, k, v = _heads(qkv, num_heads)
        go = split_heads(xp.ascontiguousarray(g), 0, d, num_heads)
        o = split_heads(out, 0, d, num_heads)
        scores = xp.matmul(q, k.transpose(0, 1, 3, 2))
        dp = xp.matmul(go, v.transpose(0, 1, 3, 2))
        K.softmax_backward(scores, dp, mask_add, has_mask, scale, rowmax, rowsum, go, o)
        dqkv = xp.empty(qkv.shape, qkv.dtype)
        dq, dk, dv = _heads(dqkv, num_heads)
        xp.matmul(dp, k, out=dq)                       # dS K (scale is inside dS)
        xp.matmul(dp.transpose(0, 1, 3, 2), q, out=dk)
        xp.matmul(scores.transpose(0, 1, 3, 2), go, out=dv)
        return (dqkv,)


def fused_attention(qkv, key_mask, num_heads, scale=None):
    """Multi-head self-attention from the packed QKV projection, as one recorded op.

    qkv (B, S, 3d) = x Wqkv^T + b with rows [Q; K; V], head h in columns h*Dh:(h+1)*Dh of each
    block (d = num_heads * Dh); key_mask (B, S), 1/True keep, 0 padding (finfo(dtype).min added
    to padded keys' scores, as Hugging Face BERT), or None; scale defaults to 1/sqrt(Dh).
    Returns the merged-heads context (B, S, d): concat_h softmax(Q_h K_h^T scale + mask) V_h.
    """
    fn = "fused_attention"
    A.tensor(fn, "qkv", qkv)
    if qkv.ndim != 3:
        raise ValueError(f"{fn}: 'qkv' must be (batch, seq, 3 * d_model), got shape {qkv.shape}")
    if not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"{fn}: 'num_heads' must be a positive int, got {num_heads!r}")
    nb, s, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"{fn}: 'qkv' last dim must be 3 * num_heads * Dh = 3 * {num_heads} * Dh, "
                         f"got shape {qkv.shape}")
    if isinstance(key_mask, Tensor):
        if key_mask.device != qkv.device:
            raise mixed_devices(fn, "qkv", qkv.device, "key_mask", key_mask.device)
        key_mask = key_mask.data
    K = A.kernels(qkv.data)
    K.CHECKS.row_length(fn, s)
    mask_add = K.mask_add(fn, key_mask, nb, s, ("qkv", qkv.data))   # a host mask goes to qkv's GPU
    scale = qkv.dtype.type(real_number(fn, "scale", head_scale(width // (3 * num_heads)) if scale is None
                                       else scale))
    return FusedAttention.apply(qkv, mask_add, key_mask is not None, int(num_heads), scale)
