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

q, k and v are copied once into head-major (B*H, S, Dh) blocks (``to_heads``, one kernel; saved for
backward in place of qkv), so every product is one strided-batched GEMM on contiguous operands
(the backend's ``bmm``: NumPy's matmul on the CPU, cuBLASLt on CUDA, where float16 runs on the
tensor cores; a transposed operand is read in place: ``trans_a``). dQ, dK and dV land in one
(3, B*H, S, Dh) block that ``from_heads`` merges into dqkv in one kernel. The row-wise softmax and dS are one
kernel each (``softmax_forward`` and ``softmax_backward`` of the tensors' kernel backend,
``minifuse/kernels/{cpu,cuda}/attention.py``).
"""

import numpy as np

from ..autograd.function import Function, mixed_devices
from ..kernels.checks import real_number
from ..kernels.layout import head_scale
from ..tensor import Tensor
from . import _args as A

__all__ = ["fused_attention", "FusedAttention"]


class FusedAttention(Function):
    """context = concat_h softmax(Q_h K_h^T * scale + mask) V_h from the packed qkv (B, S, 3d)."""

    autocast = "lower"        # under mf.autocast: the batched products in the autocast dtype
    new_gradients = True

    @staticmethod
    def forward(ctx, qkv, mask_add, has_mask, num_heads, scale):
        K = A.kernels(qkv)
        xp = K.xp
        nb, s, d3 = qkv.shape
        d, nh = d3 // 3, num_heads
        q, k, v = K.to_heads(qkv, 3, nh)                                        # (B*H, S, Dh)
        scores = K.bmm(q, k, xp.empty((nb * nh, s, s), qkv.dtype), trans_b=True)
        rowmax = xp.empty((nb, nh, s), A.stats_dtype(qkv.dtype))
        rowsum = xp.empty((nb, nh, s), A.stats_dtype(qkv.dtype))
        K.softmax_forward(scores.reshape(nb, nh, s, s), mask_add, has_mask, scale, rowmax, rowsum)
        o = K.bmm(scores, v, xp.empty(q.shape, qkv.dtype))
        out = K.from_heads(o[None], xp.empty((nb, s, d), qkv.dtype))
        ctx.save_for_backward(q, k, v, o, rowmax, rowsum, mask_add)
        ctx.meta = (K, has_mask, num_heads, scale)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, o, rowmax, rowsum, mask_add = ctx.saved_tensors
        K, has_mask, nh, scale = ctx.meta
        xp = K.xp
        bh, s, dh = q.shape
        nb, d = bh // nh, nh * dh
        go = K.to_heads(g, 1, nh)[0]
        scores = K.bmm(q, k, xp.empty((bh, s, s), q.dtype), trans_b=True)
        dp = K.bmm(go, v, xp.empty((bh, s, s), q.dtype), trans_b=True)
        # scores -> P and dp -> dS = P (dP - rowsum(dO O)) * scale, in place
        K.softmax_backward(scores.reshape(nb, nh, s, s), dp.reshape(nb, nh, s, s), mask_add, has_mask, scale,
                           rowmax, rowsum, go.reshape(nb, nh, s, dh), o.reshape(nb, nh, s, dh))
        dheads = xp.empty((3, bh, s, dh), q.dtype)
        K.bmm(dp, k, dheads[0])                                                 # dQ = dS K
        K.bmm(dp, q, dheads[1], trans_a=True)                                   # dK = dS^T Q
        K.bmm(scores, go, dheads[2], trans_a=True)                              # dV = P^T dO
        return (K.from_heads(dheads, xp.empty((nb, s, 3 * d), q.dtype)),)


def fused_attention(qkv, key_mask, num_heads, scale=None):
    """Multi-head self-attention from the packed QKV projection, as one recorded op.

    qkv (B, S, 3d) = x Wqkv^T + b with rows [Q; K; V], head h in columns h*Dh:(h+1)*Dh of each
    block (d = num_heads * Dh); key_mask (B, S), 1/True keep, 0 padding (finfo(dtype).min added
    to padded keys' scores, as Hugging Face BERT), or None; scale defaults to 1/sqrt(Dh).
    Returns the merged-heads context (B, S, d): concat_h softmax(Q_h K_h^T scale + mask) V_h.
    """
    fn = "fused_attention"
    (qkv,) = A.autocast(fn, FusedAttention, qkv)
    A.tensor(fn, "qkv", qkv)
    if qkv.ndim != 3:
        raise ValueError(f"{fn}: 'qkv' must be (batch, seq, 3 * d_model), got shape {qkv.shape}")
    return FusedAttention.apply(qkv, *attention_args(fn, ("qkv", qkv), qkv.shape, key_mask, num_heads, scale))


def attention_args(fn, like, shape, key_mask, num_heads, scale=None):
    """The checked arguments of ``FusedAttention.forward`` after qkv: (mask_add, has_mask,
    num_heads, scale), for a qkv of ``shape`` (B, S, 3d) with the dtype and device of ``like`` =
    (name, Tensor), and key_mask (B, S) or None."""
    if not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"{fn}: 'num_heads' must be a positive int, got {num_heads!r}")
    nb, s, width = shape
    if width % (3 * num_heads):
        raise ValueError(f"{fn}: '{like[0]}' last dim must be 3 * num_heads * Dh = 3 * {num_heads} * Dh, "
                         f"got shape {tuple(shape)}")
    t = like[1]
    if isinstance(key_mask, Tensor):
        if key_mask.device != t.device:
            raise mixed_devices(fn, like[0], t.device, "key_mask", key_mask.device)
        key_mask = key_mask.data
    K = A.kernels(t.data)
    K.CHECKS.row_length(fn, s)
    mask_add = K.mask_add(fn, key_mask, nb, s, (like[0], t.data))   # a host mask goes to the tensor's GPU
    # a scalar of the inputs' dtype; float32 for bfloat16, whose 8 bits would move 1/sqrt(Dh) by up to 0.4%
    stype = np.float32 if t.dtype == A.bfloat16 else t.dtype.type
    scale = stype(real_number(fn, "scale", head_scale(width // (3 * num_heads)) if scale is None else scale))
    return mask_add, key_mask is not None, int(num_heads), scale
