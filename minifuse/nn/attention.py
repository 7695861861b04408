"""Multi-head self-attention with one fused QKV projection (BERT's layout).

    [Q | K | V] = x Wqkv^T + bqkv          Wqkv: (3d, d), rows [Wq; Wk; Wv]
    head h uses columns h*Dh:(h+1)*Dh of each of Q, K, V (Dh = d / num_heads)
    A_h = softmax(Q_h K_h^T / sqrt(Dh) + mask_bias) ;  y = concat_h(A_h V_h) Wout^T + bout
mask_bias is 0 for kept keys and ``finfo(dtype).min`` for padded ones (Hugging Face BERT's
convention, which the fused kernel follows too): a padded key gets weight 0 (exactly, after
the exp underflows) and a row whose keys are all padded stays finite.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import finfo
from ..functions import where
from ..kernels.checks import mask_values
from ..kernels.layout import head_scale
from ..tensor import Tensor
from . import functional as F, fused
from .dropout import Dropout, inactive
from .linear import Linear
from .module import Module, check_input

__all__ = ["MultiHeadAttention", "mask_bias", "zero_padding"]


def mask_bias(attention_mask, batch, seq, dtype, device, fn="attention"):
    """(B, S) mask, 1 = keep, 0 = padding  ->  additive bias (1 - mask) * finfo.min of shape
    (B, 1, 1, S), built from ops so that a traced graph keeps the mask as an input."""
    m = _mask_tensor(fn, attention_mask, batch, seq)
    m = m.to(device=device, dtype=dtype)
    return ((1.0 - m) * float(finfo(dtype).min)).reshape(batch, 1, 1, seq)


def zero_padding(y, attention_mask, fn="attention"):
    """y (B, S, d) with the rows of padded positions (mask 0) set to zero: what the packed path
    returns there, so every path gives the same output."""
    if attention_mask is None:
        return y
    b, s = y.shape[:2]
    keep = _mask_tensor(fn, attention_mask, b, s).to(device=y.device) != 0
    return where(keep.reshape(b, s, 1), y, 0.0)        # zeros, also where y is NaN or inf


def _mask_tensor(fn, attention_mask, batch, seq):
    m = attention_mask if isinstance(attention_mask, Tensor) else Tensor(_as_array(fn, attention_mask))
    _check_mask(fn, m.data, batch, seq)
    return m


def _as_array(fn, attention_mask):
    try:
        return np.asarray(attention_mask)
    except (TypeError, ValueError) as e:      # ragged lists
        raise TypeError(f"{fn}: 'attention_mask' must be a (batch, seq) array of 0/1 or bool: {e}") from None


def _check_mask(fn, m, batch, seq):
    """The (B, S) mask's shape and values (bool, or numbers exactly 0 or 1), checked here so that
    the error names the layer's argument."""
    if tuple(getattr(m, "shape", ())) != (batch, seq):
        raise ValueError(f"{fn}: 'attention_mask' must have shape (batch, seq) = {(batch, seq)}, got "
                         f"{tuple(getattr(m, 'shape', ()))}")
    mask_values(fn, "attention_mask", m)


def _mask_array(attention_mask, batch, seq, fn="attention"):
    """The (B, S) key mask as an array for a kernel (checked here, so the error names the layer)."""
    if attention_mask is None:
        return None
    m = attention_mask.data if isinstance(attention_mask, Tensor) else _as_array(fn, attention_mask)
    _check_mask(fn, m, batch, seq)
    return m


class MultiHeadAttention(Module):
    """Self-attention over x of shape (B, S, d_model) with ``num_heads`` heads.

    qkv: Linear(d, 3d), out: Linear(d, d), both with Linear's init; ``dropout`` acts on the
    attention probabilities (as BERT's attention_probs_dropout).
    """

    def __init__(self, d_model, num_heads, bias=True, dropout=0.0, device=None, dtype=None):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} must be divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.qkv = Linear(d_model, 3 * d_model, bias, device, dtype)
        self.out = Linear(d_model, d_model, bias, device, dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x, attention_mask=None):
        """x (B, S, d_model), attention_mask (B, S) of bool or 0/1 (1 = keep) or None -> (B, S, d_model);
        the rows of padded positions are zeros (their queries are never computed when packed)."""
        return zero_padding(self._forward(x, attention_mask), attention_mask, "MultiHeadAttention")

    def _forward(self, x, attention_mask):
        """The attention without the zeroed padding (a TransformerLayer zeroes its own output)."""
        check_input("MultiHeadAttention", x, self.d_model, self.qkv.weight.dtype)
        if x.ndim != 3:
            raise ValueError(f"MultiHeadAttention: argument 'x' must be (batch, seq, d_model), got shape {x.shape}")
        B, S, _ = x.shape
        if inactive(self.dropout):   # inference: QKV GEMM + bias, attention on the packed heads, out GEMM
            y = fused.attention(x, self.qkv, self.out, _mask_array(attention_mask, B, S, "MultiHeadAttention"),
                                self.num_heads)
            if y is not None:
                return y
        return self.out(self._attend(self.qkv(x), attention_mask))

    def _attend(self, qkv, attention_mask):
        """softmax(Q K^T / sqrt(Dh) + mask bias) V per head, from the packed (B, S, 3d) projection
        to the merged-heads (B, S, d) context."""
        B, S, d3 = qkv.shape
        d, H, Dh = d3 // 3, self.num_heads, self.head_dim
        q, k, v = (t.reshape(B, S, H, Dh).permute(0, 2, 1, 3) for t in qkv.split([d, d, d], dim=-1))
        scores = q.matmul(k.transpose(-2, -1)) * head_scale(Dh)
        if attention_mask is not None:
            scores = scores + mask_bias(attention_mask, B, S, qkv.dtype, qkv.device, "MultiHeadAttention")
        probs = self.dropout(F.softmax(scores, dim=-1))
        return probs.matmul(v).permute(0, 2, 1, 3).reshape(B, S, d)

    def extra_repr(self):
        return f"d_model={self.d_model}, num_heads={self.num_heads}"
