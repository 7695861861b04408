"""Packed sequences on the CPU: gather the real tokens into rows, scatter them back, and
attention per sequence over its own rows (the offsets: `minifuse.kernels.packing`).

Variable-length attention reads each sequence's q, k and v straight out of the packed projection
qkv (T, 3d), as strided (L, Dh) views per head, on L x L scores: no padded query or key is ever
computed. 'loop': one kernel, blocks of query rows against blocks of keys (`attention_blocks`)
for the usual head dims, the padded kernels' per-head loops (`attention._head`) for others;
'bmm': two BLAS products around the fused softmax.
"""
import numba
import numpy as np
from numba import prange

from .. import packing
from . import attention_blocks, batched, checks
from .attention import _head, _normalize
from .jit import helper, kernel
from .rows import LANES

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["attend_varlen", "gather_rows", "pack_offsets", "scatter_rows", "to_device"]


# The row copies are loops over the row's elements: assigning a row to a row (out[t] = src[i])
# goes through Numba's general array assignment, which took twice the time.
@kernel
def _gather(src, index, out):
    for t in prange(index.shape[0]):
        srow = src[index[t]]
        orow = out[t]
        for j in range(orow.shape[0]):
            orow[j] = srow[j]


@kernel
def _scatter(src, index, out):
    for t in prange(index.shape[0]):
        srow = src[t]
        orow = out[index[t]]
        for j in range(srow.shape[0]):
            orow[j] = srow[j]


def gather_rows(src2, index, out2):
    """Checked-arguments entry: out2[t] = src2[index[t]]; src2 (N, d), out2 (T, d), index (T,)."""
    _gather(src2, index, out2)
    return out2


def scatter_rows(src2, index, out2):
    """Checked-arguments entry: out2[index[t]] = src2[t]; the other rows of out2 are left as they are."""
    _scatter(src2, index, out2)
    return out2


def pack_offsets(fn, key_mask, batch, seq, like):
    """The `Packing` of key_mask (B, S) (checked: bool or 0/1 numbers), for arrays like `like` =
    (name, array)."""
    if not isinstance(key_mask, np.ndarray):
        raise TypeError(f"{fn}: 'key_mask' must be a numpy.ndarray, got {type(key_mask).__name__}")
    checks.key_mask_values(fn, key_mask, batch, seq)
    cu, index = packing.offsets(key_mask)
    return packing.Packing(batch, seq, cu, int(np.diff(cu).max(initial=0)), index, cu)


@helper
def _rows(qkv, lo, n, c, d, dh, scale, out, r0, r1, kb, vb, qb, s, acc, tot, lanes):
    """Rows r0:r1 of one (sequence, head) of n tokens from row lo, head columns c:c+dh: the blocked
    code for a head dim in `attention_blocks.SPECIALISED` (each call below compiles it for that
    constant), `_head` for any other. Called, not inlined: the kernel around it compiles in less
    than half the time, at 0.93-1.14x the inlined kernel's time by thread count (BENCHMARKS.md)."""
    if dh == 32:
        attention_blocks.rows_blocked(qkv, lo, n, c, d, 32, scale, out, r0, r1, kb, vb, qb, s, acc, tot, lanes)
    elif dh == 64:
        attention_blocks.rows_blocked(qkv, lo, n, c, d, 64, scale, out, r0, r1, kb, vb, qb, s, acc, tot, lanes)
    else:
        hi = lo + n
        _head(qkv[lo + r0:lo + r1, c:c + dh], qkv[lo:hi, d + c:d + c + dh], qkv[lo:hi, 2 * d + c:2 * d + c + dh],
              lanes[:0], False, scale, out[lo + r0:lo + r1, c:c + dh])


@kernel
def _attention_varlen(qkv, seqlens, nh, scale, out, workers):
    """qkv (T, 3d), out (T, d). The query rows of all (sequence, head) pairs, in order, are cut
    into `workers` (the thread count) contiguous shares of equal work, a row of a sequence of L
    tokens costing L: the lengths are uneven (256 next to 10) and sorted, so equal numbers of
    (sequence, head) tasks per thread would leave one thread most of the work. (The count comes
    from the caller: `numba.get_num_threads` inside a kernel keeps it out of the cache.)"""
    d = out.shape[1]
    dh = d // nh
    nb = seqlens.shape[0] - 1
    total = 0
    longest = 0
    for b in range(nb):
        n = seqlens[b + 1] - seqlens[b]
        total += nh * n * n
        longest = max(longest, n)
    padded = (longest + attention_blocks.KEYS - 1) // attention_blocks.KEYS * attention_blocks.KEYS
    for w in prange(workers):
        kb, vb, qb, s, acc, tot, lanes = attention_blocks.scratch(padded, dh, qkv.dtype)
        start = total * w // workers      # this thread's share of the work: [start, stop)
        stop = total * (w + 1) // workers
        done = 0                          # the work of the pairs before the current one
        for b in range(nb):
            lo = seqlens[b]
            n = seqlens[b + 1] - lo
            if n == 0 or done + nh * n * n <= start:
                done += nh * n * n
                continue
            if done >= stop:
                break
            for h in range(nh):
                # the rows whose work starts inside the share: ceil((start - done) / n) on
                r0 = min(max(0, -((done - start) // n)), n)
                r1 = min(max(0, -((done - stop) // n)), n)
                if r0 < r1:
                    _rows(qkv, lo, n, h * dh, d, dh, scale, out, r0, r1, kb, vb, qb, s, acc, tot, lanes)
                done += n * n


@kernel
def _softmax_blocks(flat, offsets, seqlens, nh, scale):
    """flat: sequence b's (H, L_b, L_b) scores at offsets[b], in place: softmax(scale * s) per row."""
    for task in prange((seqlens.shape[0] - 1) * nh):
        b = task // nh
        h = task % nh
        n = seqlens[b + 1] - seqlens[b]
        lanes = np.empty(LANES, flat.dtype)
        base = offsets[b] + h * n * n
        for i in range(n):
            r = flat[base + i * n:base + (i + 1) * n]
            for j in range(n):
                r[j] *= scale
            _normalize(r, lanes, scale)


def _by_sequence(qkv, pk, num_heads, scale, out):
    """'bmm': per sequence, (H, L, L) scores from one batched product into one buffer for all
    sequences, ONE softmax kernel over them all, then one product per sequence."""
    d = out.shape[1]
    dh = d // num_heads
    cu = pk.cu_seqlens
    lengths = np.diff(cu)
    offsets = np.zeros(len(cu), np.int64)
    np.cumsum(num_heads * lengths * lengths, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), qkv.dtype)
    blocks = []
    for b, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        n = hi - lo
        if n == 0:
            continue
        q, k, v = (qkv[lo:hi, i * d:(i + 1) * d].reshape(n, num_heads, dh).transpose(1, 0, 2) for i in range(3))
        blocks.append((flat[offsets[b]:offsets[b + 1]].reshape(num_heads, n, n), q, k, v,
                       out[lo:hi].reshape(n, num_heads, dh).transpose(1, 0, 2)))
    # one (L, Dh) x (Dh, L) product per head of each sequence: a task per sequence (batched.py)
    work = int(offsets[-1]) * dh
    batched.run([lambda s=s, q=q, k=k: np.matmul(q, k.transpose(0, 2, 1), out=s) for s, q, k, _, _ in blocks], work)
    _softmax_blocks(flat, offsets, pk.seqlens, num_heads, scale)
    batched.run([lambda s=s, v=v, o=o: np.matmul(s, v, out=o) for s, _, _, v, o in blocks], work)


def attend_varlen(qkv, pk, num_heads, scale, method, out):
    """Checked-arguments entry: out (T, d) = per sequence of the Packing `pk`, the attention of
    its rows of the packed projection qkv (T, 3d) over its own rows."""
    scale = qkv.dtype.type(scale)
    if method == "loop":
        # the layers' qkv is C-contiguous; a strided one is copied rather than compiled for (the
        # kernel takes minutes to compile per array layout)
        _attention_varlen(np.ascontiguousarray(qkv), pk.seqlens, num_heads, scale, out, numba.get_num_threads())
    else:
        _by_sequence(qkv, pk, num_heads, scale, out)
    return out


def to_device(host, dtype, like):
    """A host array as a C-contiguous array of ``dtype`` for the arrays of ``like`` (here: NumPy's)."""
    return np.ascontiguousarray(host, dtype)
