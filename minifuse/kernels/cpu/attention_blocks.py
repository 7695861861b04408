"""The loops of variable-length attention ('loop', `packing._attention_varlen`) for a head dim
known when compiling: the kernel calls `rows_blocked` with the head dim as a constant.

Same semantics as `attention._head`: scores = (q k^T) * scale, softmax over the keys with the
row max subtracted (NaN propagates), out = P v / row sum.
"""
import numpy as np

from . import mathfn
from .jit import inline

# The 'loop' kernel for head dims in SPECIALISED. Work is cut into blocks: ROWS query rows against
# KEYS keys. Each block's loops have compile-time trip counts (ROWS, KEYS, CHUNK and the head dim
# passed as a constant), so LLVM unrolls the sums over the head dim / the keys and vectorizes the
# other axis with the partial sums in registers: the scores over KEYS keys at once, P V over the
# head dim at once. The general-Dh code (`attention._head`) keeps its sums in memory instead (a load
# and a store per multiply-add); with a head dim not known when compiling, these loops would not
# unroll and stay scalar, so other head dims keep `_head`.
SPECIALISED = (32, 64)
ROWS = 4      # query rows per block: each K / V value loaded serves ROWS rows
KEYS = 16     # keys per block: one AVX-512 vector of float32 scores
CHUNK = 8     # head-dim steps per pass of the score sums (a longer unrolled body stops unrolling)


@inline
def _keys_blocked(qkv, lo, n, kcol, vcol, dh, kb, vb):
    """kb[(jb*dh + e)*KEYS + jj] = K[jb*KEYS + jj, e] (K^T per key block); vb (L padded to KEYS, dh)
    = V, for K, V the dh columns of qkv from kcol / vcol in rows lo:lo+n. Rows are read as 1-D
    slices (C-contiguous to Numba) indexed by loop counters: an index like qkv[lo + j, col + e]
    gets a negative-index fix-up per element, which keeps these copies scalar and slow (here and
    in `_load_q` / `_store_out`). A padded key's entries are 0 in both: its probability is 0,
    and 0 * garbage could be NaN; its score is computed before it is masked, and a product with
    garbage could be a denormal (slow on Intel cores, mathfn._EXP32)."""
    for j in range(n):
        krow = qkv[lo + j, kcol:kcol + dh]
        vrow = qkv[lo + j, vcol:vcol + dh]
        kbase = (j // KEYS) * dh * KEYS + j % KEYS
        for e in range(dh):
            kb[kbase + e * KEYS] = krow[e]
        for e in range(dh):
            vb[j * dh + e] = vrow[e]
    for j in range(n, (n + KEYS - 1) // KEYS * KEYS):
        kbase = (j // KEYS) * dh * KEYS + j % KEYS
        for e in range(dh):
            kb[kbase + e * KEYS] = 0
        for e in range(dh):
            vb[j * dh + e] = 0


@inline
def _load_q(qkv, lo, c, dh, i0, r1, qb):
    """qb[r*dh + e] = Q[i0 + r, e], the head's query rows i0:i0+ROWS (a short last block repeats
    its last row, which is not written)."""
    for r in range(ROWS):
        qrow = qkv[lo + min(i0 + r, r1 - 1), c:c + dh]
        for e in range(dh):
            qb[r * dh + e] = qrow[e]


@inline
def _store_out(out, lo, c, dh, i0, r1, acc, tot):
    """The block's rows of out = acc / row sum, as acc times the float64 reciprocal of the sum,
    rounded once: in float32 the quotient to the bit but for about one case in 10^8, in float64
    within an ulp of it (a division per element does not vectorize here)."""
    for r in range(min(ROWS, r1 - i0)):
        orow = out[lo + i0 + r, c:c + dh]
        inv = 1 / np.float64(tot[r])
        for e in range(dh):
            orow[e] = acc[r * dh + e] * inv


@inline
def _block_scores(qb, kb, s, nblk, dh):
    """s[(jb*ROWS + r)*KEYS + jj] = q_r . k_(jb*KEYS + jj) (unscaled), for ROWS rows qb (ROWS*dh),
    the sum over the head dim in order (a chunk of CHUNK steps per pass, in registers)."""
    for i in range(nblk * ROWS * KEYS):
        s[i] = 0
    for jb in range(nblk):
        kbase = jb * dh * KEYS
        sb = jb * ROWS * KEYS
        for e0 in range(0, dh, CHUNK):
            for jj in range(KEYS):
                t0 = s[sb + jj]
                t1 = s[sb + KEYS + jj]
                t2 = s[sb + 2 * KEYS + jj]
                t3 = s[sb + 3 * KEYS + jj]
                for e in range(e0, e0 + CHUNK):
                    k = kb[kbase + e * KEYS + jj]
                    t0 += qb[e] * k
                    t1 += qb[dh + e] * k
                    t2 += qb[2 * dh + e] * k
                    t3 += qb[3 * dh + e] * k
                s[sb + jj] = t0
                s[sb + KEYS + jj] = t1
                s[sb + 2 * KEYS + jj] = t2
                s[sb + 3 * KEYS + jj] = t3


@inline
def _block_softmax(s, nblk, n, lanes, tot, scale):
    """The blocked scores of ROWS rows -> exp(scale * s - row max) in place, padded keys 0;
    tot[r] <- row r's sum. Max and sum run KEYS lanes per row (vectorized), then over the lanes;
    the max skips NaN, which makes its row NaN through exp anyway."""
    for i in range(nblk * ROWS * KEYS):
        s[i] *= scale
    last = (nblk - 1) * ROWS * KEYS
    for r in range(ROWS):
        for jj in range(n - (nblk - 1) * KEYS, KEYS):
            s[last + r * KEYS + jj] = -np.inf
    for i in range(ROWS * KEYS):
        lanes[i] = -np.inf
    for jb in range(nblk):
        base = jb * ROWS * KEYS
        for i in range(ROWS * KEYS):
            t = s[base + i]
            lanes[i] = t if t > lanes[i] else lanes[i]
    for r in range(ROWS):
        mx = lanes[r * KEYS]
        for jj in range(1, KEYS):
            t = lanes[r * KEYS + jj]
            mx = t if t > mx else mx
        tot[r] = mx
    for jb in range(nblk):
        base = jb * ROWS * KEYS
        for r in range(ROWS):
            mx = tot[r]
            for jj in range(KEYS):
                s[base + r * KEYS + jj] = mathfn.exp_(s[base + r * KEYS + jj] - mx)
    for i in range(ROWS * KEYS):
        lanes[i] = 0
    for jb in range(nblk):
        base = jb * ROWS * KEYS
        for i in range(ROWS * KEYS):
            lanes[i] += s[base + i]
    for r in range(ROWS):
        sm = lanes[r * KEYS]
        for jj in range(1, KEYS):
            sm += lanes[r * KEYS + jj]
        tot[r] = sm


@inline
def _block_values(s, vb, acc, nblk, dh):
    """acc[r*dh + e] = sum over keys of p_r,j * v_j,e for ROWS rows (the sum in key order, KEYS
    keys per pass in registers)."""
    for i in range(ROWS * dh):
        acc[i] = 0
    for jb in range(nblk):
        sb = jb * ROWS * KEYS
        vbase = jb * KEYS * dh
        for e in range(dh):
            a0 = acc[e]
            a1 = acc[dh + e]
            a2 = acc[2 * dh + e]
            a3 = acc[3 * dh + e]
            for jj in range(KEYS):
                v = vb[vbase + jj * dh + e]
                a0 += s[sb + jj] * v
                a1 += s[sb + KEYS + jj] * v
                a2 += s[sb + 2 * KEYS + jj] * v
                a3 += s[sb + 3 * KEYS + jj] * v
            acc[e] = a0
            acc[dh + e] = a1
            acc[2 * dh + e] = a2
            acc[3 * dh + e] = a3


@inline
def rows_blocked(qkv, lo, n, c, d, dh, scale, out, r0, r1, kb, vb, qb, s, acc, tot, lanes):
    """Rows r0:r1 of one (sequence, head) of L = n tokens at row lo, head columns c:c+dh, dh a
    compile-time constant, with the scratch of `scratch`."""
    nblk = (n + KEYS - 1) // KEYS
    _keys_blocked(qkv, lo, n, d + c, 2 * d + c, dh, kb, vb)
    for i0 in range(r0, r1, ROWS):
        _load_q(qkv, lo, c, dh, i0, r1, qb)
        _block_scores(qb, kb, s, nblk, dh)
        _block_softmax(s, nblk, n, lanes, tot, scale)
        _block_values(s, vb, acc, nblk, dh)
        _store_out(out, lo, c, dh, i0, r1, acc, tot)


@inline
def scratch(padded, dh, dtype):
    """One thread's scratch for `rows_blocked` (kb, vb, qb, s, acc, tot, lanes), for sequences of
    up to `padded` tokens (a multiple of KEYS)."""
    return (np.empty(padded * dh, dtype), np.empty(padded * dh, dtype), np.empty(ROWS * dh, dtype),
            np.empty(padded * ROWS, dtype), np.empty(ROWS * dh, dtype), np.empty(ROWS, dtype),
            np.empty(ROWS * KEYS, dtype))
