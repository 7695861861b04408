"""Rows moved by an index, as recorded ops: what packed (unpadded) training is made of.

    gather_rows(x, index)              out[t] = x2[index[t]]      x2 = x as (N, d) rows
    scatter_rows(rows, index, n)       out = zeros (n, d); out[index[t]] = rows[t]

With distinct indices the two are each other's transpose, so each one's backward is the other:
the gradient of a gather is a scatter of the upstream gradient into zeros, that of a scatter a
gather. A padded batch x (B, S, d) with key mask m packs to its T real rows with
``gather_rows(x, index)`` (``index`` from ``minifuse.kernels.packing.offsets``) and unpacks with
``scatter_rows(rows, index, B * S)`` (zeros at the padding); between them every token-wise fused
function runs on T rows (docs/packing.md, "Training"). The kernels are the backend's
``gather_rows`` / ``scatter_rows``, those of packed inference.
"""
import math

import numpy as np

from ..autograd.function import Function
from ..kernels.checks import contiguous
from . import _args as A

__all__ = ["gather_rows", "scatter_rows", "GatherRows", "ScatterRows"]  # and device_index, for the layers


def _gather(K, x2, index):
    out = K.xp.empty((index.shape[0], x2.shape[1]), x2.dtype)
    return K.gather_rows(contiguous(K.xp, x2), index, out)


def _scatter(K, rows, index, n):
    out = K.xp.zeros((n, rows.shape[1]), rows.dtype)
    return K.scatter_rows(contiguous(K.xp, rows), index, out)


class GatherRows(Function):
    """out (T, d) = the rows index[t] of x (..., d); backward: the gradient scattered back."""

    @staticmethod
    def forward(ctx, x, index):
        K = A.kernels(x)
        d = x.shape[-1]
        ctx.meta = (K, x.shape, index)
        return _gather(K, x.reshape(math.prod(x.shape[:-1]), d), index)

    @staticmethod
    def backward(ctx, g):
        K, shape, index = ctx.meta
        return _scatter(K, g, index, math.prod(shape[:-1])).reshape(shape)


class ScatterRows(Function):
    """out (n, d): zeros, and rows[t] at row index[t]; backward: the gradient's rows gathered."""

    @staticmethod
    def forward(ctx, rows, index, n):
        K = A.kernels(rows)
        ctx.meta = (K, index)
        return _scatter(K, rows, index, n)

    @staticmethod
    def backward(ctx, g):
        K, index = ctx.meta
        return _gather(K, g, index)


def _index(fn, index, bound, like):
    """``index`` as an int64 array of the backend of ``like`` (a Tensor), distinct values in [0, bound)."""
    host = index.get() if hasattr(index, "get") else np.asarray(index)
    if host.ndim != 1 or host.dtype.kind not in "iu":
        raise TypeError(f"{fn}: 'index' must be a 1-D integer array, got {host.dtype} of shape {host.shape}")
    if host.size and (host.min() < 0 or host.max() >= bound):
        raise ValueError(f"{fn}: 'index' values must be in [0, {bound}), got [{host.min()}, {host.max()}]")
    if np.unique(host).size != host.size:
        raise ValueError(f"{fn}: 'index' values must be distinct (each row moved once)")
    return device_index(host, like.data)


def device_index(host, like):
    """A host index (checked) as int64 on the device of the array ``like``."""
    return A.kernels(like).to_device(host, np.int64, like)


def gather_rows(x, index):
    """The rows ``index`` (T,) of x (..., d) viewed as (N, d) rows -> (T, d); distinct indices in
    [0, N). Differentiable in x."""
    fn = "gather_rows"
    A.tensor(fn, "x", x, min_ndim=1)
    n = math.prod(x.shape[:-1])
    return GatherRows.apply(x, _index(fn, index, n, x))


def scatter_rows(rows, index, n):
    """(n, d) zeros with rows (T, d) at the rows ``index`` (T,) (distinct, in [0, n)).
    Differentiable in rows."""
    fn = "scatter_rows"
    A.tensor(fn, "rows", rows)
    if rows.ndim != 2:
        raise ValueError(f"{fn}: 'rows' must be (T, d), got shape {rows.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{fn}: 'n' must be an int >= 0, got {n!r}")
    index = _index(fn, index, n, rows)
    if index.shape[0] != rows.shape[0]:
        raise ValueError(f"{fn}: 'index' has {index.shape[0]} entries, expected one per row of 'rows' ({rows.shape[0]})")
    return ScatterRows.apply(rows, index, n)

