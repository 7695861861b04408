"""Scaled dot-product attention with a key-padding mask on CUDA.

Semantics (those of the CPU kernel and the unfused path): scores = (q @ k^T) * scale; where
key_mask == 0 add finfo(dtype).min; P = softmax over keys (max subtracted); out = P @ v.

The two products are strided batched GEMMs, one per (batch, head) in a single call: cuBLASLt
(cublaslt.py, so that a CUDA graph can capture them; `gemm.lt_bmm`) on contiguous copies of q,
k, v (CuPy's matmul makes the same copies), CuPy's cuBLAS matmul where cuBLASLt does not apply.
Between them, ONE numba kernel (`masked_softmax`: the row in registers, read and written in
8-byte words, `words.py`) does what the unfused path does in six passes
over the (B, H, Sq, Sk) scores (scale, mask add, max, subtract+exp, sum, divide): one read and
one write of the scores, in place. A flash-attention kernel (scores never in memory) would also
save that pass, but in float32 without tensor cores a numba kernel loses more on the products
than it saves: at BERT-base B=32, S=128 the scores are 25 MB, about 17 us of traffic on an H100.

Training (``minifuse.fusions.fused_attention``) runs its products as batched cuBLAS GEMMs and the
row-wise work here: the same softmax kernel keeping each row's max m and sum l of exp(t - m),
and a backward (one block per score row) that recomputes P from the raw scores, m and l exactly as
forward does and writes dS = P (dP - D) * scale over dP, D = rowsum(dO * O).
"""
import functools
import math

import numpy as np

from ...dtypes import finfo
from .. import validate
from ..checks import contiguous
from . import checks, words
from .blocks import MAX_THREADS, block_max, block_sum, row_layout, rows_per_block
from .checks import CHECKS, flat_rows
from .gemm import lt_bmm, matmul
from .mathfn import compute_dtype
from .runtime import MIN_THREADS, SIMULATOR, blocks, cuda, launch, row_threads, xp_for
from .storage import access

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["attend_packed", "attention", "attention_packed", "from_heads", "mask_add", "softmax_backward",
           "softmax_forward", "to_heads"]


# Threads per score row at least: 8, so that a row of 128 float16 scores is four words a thread
# and a warp has four rows' loads in flight before its first reduction (one word a thread, a row
# per warp, left the memory system idle while each warp reduced).
SOFTMAX_FEWEST = MIN_THREADS if SIMULATOR else 8


@functools.lru_cache(maxsize=None)
def row_exp_sum(ctype):
    """The softmax's reductions over a row held in registers by its block's row threads, for
    values of the compute type ``ctype``: a device function (buf, vals, mx) -> (m, total) that every
    thread of the block calls, with ``vals`` its values (-inf where it holds none) and ``mx`` their
    max (a NaN wins); after it ``vals`` hold exp(v - m), m the row's max, total their row sum.
    Shared by the padded softmax here and the variable-length attention (packing.py)."""
    zero = ctype(0)

    @cuda.jit(device=True, inline=True)
    def exp_sum(buf, vals, mx):
        mx = block_max(buf, mx)
        total = zero
        for i in range(vals.shape[0]):
            e = math.exp(vals[i] - mx)       # -inf (no value) gives 0 for any finite or +inf max
            vals[i] = e
            total += e
        return mx, block_sum(buf, total)
    return exp_sum


@functools.lru_cache(maxsize=None)
def _softmax_kernel(dtype, stats, fmt, per):
    """For scores of `dtype` (in format `fmt`), rowmax and rowsum of `stats`; the mask in the
    compute dtype."""
    ctype = compute_dtype(dtype).type
    ninf = ctype(-np.inf)
    n = words.values_per_word(fmt)
    held = per * n                  # values per thread (a compile-time size)
    word2, _, value, put2 = words.functions(fmt, dtype)
    store_stat = access(stats)[1]
    exp_sum = row_exp_sum(ctype)

    @cuda.jit
    def masked_softmax(s, rows_per_batch, mask_add, has_mask, scale, rowmax, rowsum, keep):
        """s (R, Sk) in place: softmax(s * scale + mask_add[row // rows_per_batch]); with keep
        (training) also each row's max and sum of exp(t - max), what the fused backward reads.
        Thread t holds the words t, t + T, ... of its row (`words.py`)."""
        row = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        sk = s.shape[1]
        nw = sk // n
        live = row < s.shape[0]            # a row past the end still joins every block reduction
        b = row // rows_per_batch
        buf = cuda.shared.array(MAX_THREADS, ctype)
        vals = cuda.local.array(held, ctype)
        mx = ninf
        for i in range(per):
            wi = tid + i * nt
            for k in range(n):
                vals[i * n + k] = ninf
            if wi < nw and live:
                w = word2(s, row, wi)
                for k in range(n):
                    t = value(w, k) * scale
                    if has_mask:
                        t += mask_add[b, wi * n + k]
                    if t > mx or t != t:
                        mx = t
                    vals[i * n + k] = t
        mx, total = exp_sum(buf, vals, mx)
        if not live:
            return
        inv = ctype(1) / total
        for i in range(per):
            wi = tid + i * nt
            if wi < nw:
                for k in range(n):
                    vals[i * n + k] = vals[i * n + k] * inv
                put2(s, row, wi, vals, i * n)
        if keep and tid == 0:
            rowmax[row] = store_stat(mx)
            rowsum[row] = store_stat(total)
    return masked_softmax


@functools.lru_cache(maxsize=None)
def _mask_add_kernel(ct):
    zero = np.dtype(ct).type(0)

    @cuda.jit
    def fill(key_mask, pad_value, out):
        b = cuda.blockIdx.y
        j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if j < out.shape[1]:
            out[b, j] = pad_value if key_mask[b, j] == 0 else zero
    return fill


def _additive_mask(xp, key_mask, dtype):
    """key_mask (B, Sk), 1 keep / 0 pad -> the additive (B, Sk) mask: 0 / finfo(dtype).min.
    One kernel (CuPy's `where(mask == 0, ...).astype(...)` was three launches, ~90 us of Python)."""
    ct = compute_dtype(dtype)
    nb, sk = key_mask.shape
    out = xp.empty((nb, sk), ct)
    if out.size:
        t = row_threads(sk)
        launch(_mask_add_kernel(ct), (blocks(sk, t), nb), t, key_mask, ct.type(finfo(dtype).min), out)
    return out


def launch_masked_softmax(scores2, rows_per_batch, madd, has_mask, scale, rowmax=None, rowsum=None):
    """scores2 (R, Sk) C-contiguous, in place, madd from `mask_add` (any (B, Sk) when not
    has_mask); rowmax, rowsum (R,) written when given."""
    r, sk = scores2.shape
    if r == 0:
        return scores2
    ct = compute_dtype(scores2.dtype)
    keep = rowmax is not None
    if not keep:
        rowmax = rowsum = scores2[0, :0]
    fmt = words.format_for(sk, scores2)
    t, per = row_layout(words.words(sk, fmt), SOFTMAX_FEWEST)
    g = rows_per_block(t)
    launch(_softmax_kernel(scores2.dtype, rowmax.dtype, fmt, per), blocks(r, g), (t, g), scores2, rows_per_batch,
           madd, has_mask, ct.type(scale), rowmax, rowsum, keep)
    return scores2


def mask_add(fn, key_mask, batch, keys, like):
    """key_mask (B, Sk), 1/True keep, 0 pad -> additive (B, Sk) of 0 / finfo(dtype).min on the device
    of `like` = (name, array), the argument the mask goes with (a host mask is copied there), or a
    (1, 1) placeholder for no mask."""
    name, a = like
    xp = xp_for(fn, name, a)
    if key_mask is None:
        return xp.zeros((1, 1), compute_dtype(a.dtype))            # never read: has_mask is False
    return _additive_mask(xp, checks.key_mask(fn, key_mask, batch, keys, like), a.dtype)


def softmax_forward(s, mask_add, has_mask, scale, rowmax, rowsum):
    """s (B, H, Sq, Sk) raw scores Q K^T, C-contiguous -> probabilities in place; rowmax, rowsum
    (B, H, Sq)."""
    nb, nh, sq, sk = s.shape
    if not s.flags.c_contiguous:   # the kernel works on the (rows, Sk) view, which must not be a copy
        raise ValueError(f"softmax_forward: 's' must be C-contiguous, got strides {s.strides}")
    launch_masked_softmax(flat_rows(s, sk), nh * sq, mask_add, has_mask, scale,
                          rowmax.reshape(-1), rowsum.reshape(-1))


@functools.lru_cache(maxsize=None)
def _softmax_backward_kernel(dtype, stats, fmt, per):
    """For s, dp, do and o of `dtype` (s and dp in format `fmt`), rowmax and rowsum of `stats`;
    the mask in the compute dtype."""
    ctype = compute_dtype(dtype).type
    zero = ctype(0)
    n = words.values_per_word(fmt)
    held = per * n                  # values per thread (a compile-time size)
    word2, _, value, put2 = words.functions(fmt, dtype)
    load = access(dtype)[0]
    load_stat = access(stats)[0]

    @cuda.jit
    def softmax_backward(s, dp, mask_add, has_mask, scale, rowmax, rowsum, do, o):
        """s, dp (R, Sk) rows of the (B, H, Sq, Sk) scores in place; do, o (B, H, Sq, Dh) any
        strides; rowmax, rowsum (R,). The softmax forward's layout: row blockIdx.x * blockDim.y
        + threadIdx.y, thread t takes its row's words t, t + T, ..."""
        row = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        nh, sq, dh = o.shape[1], o.shape[2], o.shape[3]
        nw = s.shape[1] // n
        live = row < s.shape[0]            # a row past the end still joins the block reduction
        bh = row // sq
        b = bh // nh
        h = bh - b * nh
        i = row - bh * sq
        buf = cuda.shared.array(MAX_THREADS, ctype)
        part = zero
        c = tid
        while c < dh and live:
            part += load(do[b, h, i, c]) * load(o[b, h, i, c])
            c += nt
        dsum = block_sum(buf, part)
        if not live:
            return
        mx = load_stat(rowmax[row])
        inv = ctype(1) / load_stat(rowsum[row])
        p = cuda.local.array(held, ctype)
        ds = cuda.local.array(held, ctype)
        for w in range(per):
            wi = tid + w * nt
            if wi < nw:
                ws = word2(s, row, wi)
                wd = word2(dp, row, wi)
                for k in range(n):
                    t = value(ws, k) * scale
                    if has_mask:
                        t += mask_add[b, wi * n + k]
                    pk = math.exp(t - mx) * inv
                    p[w * n + k] = pk
                    ds[w * n + k] = pk * (value(wd, k) - dsum) * scale
                put2(s, row, wi, p, w * n)
                put2(dp, row, wi, ds, w * n)
    return softmax_backward


def softmax_backward(s, dp, mask_add, has_mask, scale, rowmax, rowsum, do, o):
    """s: raw scores Q K^T -> P in place (recomputed); dp: dO V^T -> dS = P (dP - D) * scale in
    place, D = rowsum(dO * O). s, dp (B, H, Sq, Sk) C-contiguous; do, o (B, H, Sq, D) (any
    strides)."""
    nb, nh, sq, sk = s.shape
    rows = nb * nh * sq
    if rows == 0:
        return
    for name, a in (("s", s), ("dp", dp)):
        if not a.flags.c_contiguous:   # the kernel works on the (rows, Sk) view, which must not be a copy
            raise ValueError(f"softmax_backward: '{name}' must be C-contiguous, got strides {a.strides}")
    if SIMULATOR:   # it transfers only contiguous NumPy arrays; numba on a GPU takes the strided views
        do, o = np.ascontiguousarray(do), np.ascontiguousarray(o)
    ct = compute_dtype(s.dtype)
    s2, dp2 = flat_rows(s, sk), flat_rows(dp, sk)
    fmt = words.format_for(sk, s2, dp2)
    t, per = row_layout(words.words(sk, fmt), SOFTMAX_FEWEST)
    g = rows_per_block(t)
    launch(_softmax_backward_kernel(s.dtype, rowmax.dtype, fmt, per), blocks(rows, g), (t, g), s2, dp2, mask_add,
           has_mask, ct.type(scale), rowmax.reshape(-1), rowsum.reshape(-1), do, o)


def _attend(xp, q, k, v, madd, has_mask, scale, out):
    """out[...] = softmax(q k^T * scale + mask) v for q (B, H, Sq, D), k, v (B, H, Sk, D)."""
    nb, nh, sq, dh = q.shape
    sk = k.shape[2]
    if sk == 0 or nb * nh * sq * dh == 0:   # an empty sum over no keys is 0 (as P @ v is); nothing to launch
        ctx = xp.zeros((nb, nh, sq, dh), q.dtype)
        if out is None:
            return ctx
        out[...] = ctx
        return out
    if xp is not np:   # strided batched cuBLASLt GEMMs (capturable); q, k, v made contiguous first
        # explicit lengths: an empty batch cannot reshape with -1
        q3, k3, v3 = (contiguous(xp, t).reshape(nb * nh, t.shape[2], dh) for t in (q, k, v))
        scores = xp.empty((nb * nh, sq, sk), q.dtype)
        ctx = xp.empty((nb * nh, sq, dh), q.dtype)
        if lt_bmm(q3, k3, scores, trans_b=True):
            launch_masked_softmax(flat_rows(scores, sk), nh * sq, madd, has_mask, scale)
            if lt_bmm(scores, v3, ctx):
                ctx = ctx.reshape(nb, nh, sq, dh)
                if out is None:
                    return ctx
                out[...] = ctx
                return out
    scores = matmul(xp, q, xp.swapaxes(k, -1, -2))                # (B, H, Sq, Sk), cuBLAS
    launch_masked_softmax(flat_rows(scores, sk), nh * sq, madd, has_mask, scale)
    return matmul(xp, scores, v, out=out)


def attend(q, k, v, madd, has_mask, scale, method, out):
    """Checked-arguments entry: out = softmax(q k^T * scale + mask) v; q, out (B, H, Sq, D),
    k, v (B, H, Sk, D). `method` is the CPU's choice; here both are batched cuBLAS products
    around one fused softmax kernel (the CPU's 'bmm'; a GPU has no use for 'loop')."""
    return _attend(xp_for("attention", "q", q), q, k, v, madd, has_mask, scale, out)


# Head split and merge move bytes only: they run on words of 8, 4, 2 or 1 bytes (`_word`), so
# that a float16 head row of 64 values is 16 eight-byte moves per thread row instead of 64
# two-byte ones. Thread (x, y) of a block moves word x of head y's run of one row; no division.
_WORDS = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}


def _word(a, *byte_counts):
    """The widest word that divides every byte count and a's address."""
    start = words.address(a)
    for w in (8, 4, 2, 1):
        if start % w == 0 and all(n % w == 0 for n in byte_counts):
            return w
    return 1


@functools.lru_cache(maxsize=None)
def _head_copy_kernel(parts, word, split):
    """The copy between rows (B*S, P H dh) and heads (P, >= B H S dh), in words of numpy type
    `word`: word c of head h of part p of row r = b S + i is heads[p, ((b H + h) S + i) dh + c];
    `split` copies rows to heads, else heads to rows. Block r, heads along y. A thread loads its
    word of every part before it stores them: `parts` loads in flight where one kept the memory
    system idle."""
    @cuda.jit
    def copy(rows, heads, seq, num_heads, dh):
        r = cuda.blockIdx.x
        b = r // seq
        i = r - b * seq
        width = num_heads * dh
        vals = cuda.local.array(parts, word)
        h = cuda.threadIdx.y
        while h < num_heads:
            at = ((b * num_heads + h) * seq + i) * dh
            c = cuda.threadIdx.x
            while c < dh:
                for p in range(parts):
                    vals[p] = rows[r, p * width + h * dh + c] if split else heads[p, at + c]
                for p in range(parts):
                    if split:
                        heads[p, at + c] = vals[p]
                    else:
                        rows[r, p * width + h * dh + c] = vals[p]
                c += cuda.blockDim.x
            h += cuda.blockDim.y
    return copy


def _head_block(words, heads):
    """(x, y) threads: a head's words along x, heads along y, at most 1024 in all."""
    x = min(words, MAX_THREADS)
    return x, max(1, min(heads, MAX_THREADS // x))


def to_heads(a, parts, num_heads):
    """a (B, S, parts * d), part p in columns p*d:(p+1)*d, head h of a part in its columns
    h*Dh:(h+1)*Dh -> (parts, B*H, S, Dh), each part C-contiguous and starting on a 256-byte
    boundary (what cuBLASLt's batched products need, and with them a CUDA graph capture).
    One kernel for all parts, in 8-byte words where the widths allow."""
    xp = xp_for("to_heads", "a", a)
    nb, s, width = a.shape
    dh = width // parts // num_heads
    size = nb * num_heads * s * dh
    pad = (-size) % max(1, 256 // a.dtype.itemsize)
    base = xp.empty(parts * (size + pad), a.dtype).reshape(parts, size + pad)
    heads = base[:, :size].reshape(parts, nb * num_heads, s, dh)
    if size == 0:
        return heads
    item = a.dtype.itemsize
    rows = contiguous(xp, a).reshape(nb * s, width)
    w = _word(rows, dh * item, (size + pad) * item)
    launch(_head_copy_kernel(parts, _WORDS[w], True), nb * s, _head_block(dh * item // w, num_heads),
           rows.view(_WORDS[w]), base.view(_WORDS[w]), s, num_heads, dh * item // w)
    return heads


def from_heads(heads, out):
    """The inverse of `to_heads`: heads (P, B*H, S, Dh) C-contiguous -> out (B, S, P*d)
    C-contiguous, part p in columns p*d:(p+1)*d with its heads side by side. Returns out."""
    parts, bh, s, dh = heads.shape
    nb = out.shape[0]
    if out.size == 0:
        return out
    item = heads.dtype.itemsize
    flat = heads.reshape(parts, bh * s * dh)
    rows = out.reshape(nb * s, out.shape[2])
    w = min(_word(flat, flat.shape[1] * item), _word(rows, dh * item))
    launch(_head_copy_kernel(parts, _WORDS[w], False), nb * s, _head_block(dh * item // w, bh // nb),
           rows.view(_WORDS[w]), flat.view(_WORDS[w]), s, bh // nb, dh * item // w)
    return out


def attend_packed(qkv, madd, has_mask, num_heads, scale, method, out):
    """Checked-arguments entry: the attention of the packed projection qkv (B, S, 3d) into the
    merged-heads context out (B, S, d)."""
    xp = xp_for("attention_packed", "qkv", qkv)
    heads = to_heads(qkv, 3, num_heads)                                  # q, k, v (B*H, S, Dh)
    if heads.size == 0:                 # out (B, S, d) is empty too
        return out
    bh, s, dh = heads.shape[1:]
    shape = (qkv.shape[0], num_heads, s, dh)
    ctx = _attend(xp, *(heads[p].reshape(shape) for p in range(3)), madd, has_mask, scale, None)
    ctx = contiguous(xp, ctx).reshape(1, bh, s, dh)
    if out.flags.c_contiguous:
        return from_heads(ctx, out)
    out[...] = from_heads(ctx, xp.empty(out.shape, out.dtype))
    return out


def attention(q, k, v, key_mask, scale, out=None, method="loop"):
    """softmax((q @ k^T) * scale + mask) @ v per (batch, head).

    q (B, H, Sq, D), k, v (B, H, Sk, D), key_mask (B, Sk) (1/True keep, 0 padding) or None;
    padded keys get finfo(dtype).min added to their scores. Returns (B, H, Sq, D).
    method: 'loop' or 'bmm', the CPU kernels' choice; one implementation here (see `attend`).
    """
    fn = "attention"
    scale, out = validate.attention(CHECKS, fn, q, k, v, scale, method, out)
    madd = mask_add(fn, key_mask, q.shape[0], k.shape[2], ("q", q))
    return attend(q, k, v, madd, key_mask is not None, scale, method, out)


def attention_packed(qkv, key_mask, num_heads, scale, out=None, method="loop"):
    """Attention on the output of one fused QKV projection, result in merged-heads layout.

    qkv (B, S, 3d) = x @ Wqkv.T + b with Wqkv rows [Q; K; V], d = num_heads * Dh, head h in
    columns h*Dh:(h+1)*Dh of each block. Returns context (B, S, d). Same semantics as `attention`.
    """
    fn = "attention_packed"
    scale, out = validate.attention_packed(CHECKS, fn, qkv, num_heads, scale, method, out)
    nb, s = qkv.shape[:2]
    madd = mask_add(fn, key_mask, nb, s, ("qkv", qkv))
    return attend_packed(qkv, madd, key_mask is not None, num_heads, scale, method, out)
