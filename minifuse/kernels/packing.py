"""Packed (unpadded) sequences: the offsets every backend's packed kernels take.

A padded batch x (B, S, d) with key mask m (B, S) (1 = token, 0 = padding) holds T = sum(m)
real tokens. Packed, the same tokens are the rows of one (T, d) matrix, sequence b in rows
``cu_seqlens[b]:cu_seqlens[b + 1]`` in their order within the sequence (FlashAttention's
``cu_seqlens``). Every token-wise step (the GEMMs, their epilogues, residual + LayerNorm) runs on
those T rows; attention runs per sequence over its own rows. ``index[t]`` is the padded row
(b * S + s) that packed row t came from: packing gathers rows by it, unpacking scatters them back
and fills the padded rows with zeros.

Any 0/1 mask packs (right, left or scattered padding): attention only ever mixes a token with
the kept keys of its own sequence, so which positions are kept does not change what a token
sees, only where its output goes back.
"""
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Packing", "offsets"]


class Packing(NamedTuple):
    """What a packed batch keeps of its padded shape.

    batch, seq: B and S of the padded layout; cu_seqlens (B + 1,) int64 NumPy (host) offsets;
    max_seqlen: the longest sequence; index (T,) int64 and seqlens (B + 1,) int64: ``index`` and
    ``cu_seqlens`` as the backend's arrays (on its device), what its kernels read."""
    batch: int
    seq: int
    cu_seqlens: Any
    max_seqlen: int
    index: Any
    seqlens: Any

    @property
    def tokens(self):
        """T, the number of real tokens (packed rows)."""
        return int(self.cu_seqlens[-1])


def offsets(mask):
    """(cu_seqlens (B + 1,), index (T,)) of a host 0/1 mask (B, S), both int64."""
    keep = np.asarray(mask) != 0          # (B, S), checked by the caller
    cu = np.zeros(keep.shape[0] + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=cu[1:])
    return cu, np.flatnonzero(keep.reshape(-1)).astype(np.int64)
