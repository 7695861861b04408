"""Packed sequences on CUDA: gather the real tokens into rows, scatter them back, and attention
per sequence over its own rows (the offsets: `minifuse.kernels.packing`). Same entry points and
signatures as the CPU's `packing.py`.

Attention of packed rows has two routes, chosen per call from the sequence lengths:
- padded to the longest sequence: the rows of q, k, v are scattered into a (B, L, 3d) block
  (L = max_seqlen, zeros after each sequence's end), the padded attention runs on it (batched
  cuBLASLt GEMMs on the tensor cores around one softmax kernel, keys past a sequence's end
  masked) and the real rows are gathered back. The token-wise work of the layer stays on the T
  real rows; only attention sees padding, and only up to the batch's longest sequence (none for
  equal lengths, little for length-sorted batches, as `encode` makes them);
- one variable-length kernel, a block per (packed query row, head): the block finds its
  sequence in cu_seqlens (a binary search), scores its query against that sequence's keys only
  (thread j holds keys j, j + T, ... in registers, as the row softmax does), takes the softmax
  with block reductions, writes the probabilities to a scratch row of max_seqlen and sums the
  values with them, a thread per head dimension. No padding is touched, but its products run
  on the CUDA cores, several times slower per product than the tensor-core GEMMs.
The padded route runs unless it would compute more than `PAD_WORK_RATIO` times the score
entries that the sequences have (B L^2 against the sum of their squared lengths: one long
sequence among many short ones).
"""
import functools

import numpy as np

from ...dtypes import finfo
from .. import packing
from . import checks
from .attention import attend_packed, row_exp_sum
from .blocks import MAX_THREADS, PER, threads_for
from .checks import device_id
from .mathfn import compute_dtype
from .runtime import SIMULATOR, blocks, cuda, host_to_device, launch, row_threads, xp_for
from .storage import access
from .words import address

# this module's entry points (minifuse.kernels.registry.ENTRY_POINTS)
__all__ = ["attend_varlen", "gather_rows", "pack_offsets", "scatter_rows", "to_device"]

# The padded route of `attend_varlen` runs while B * L^2 <= PAD_WORK_RATIO * sum of squared lengths.
PAD_WORK_RATIO = 8.0


@cuda.jit(device=True)
def _sequence_of(seqlens, t):
    """The sequence b with seqlens[b] <= t < seqlens[b + 1] (a binary search over the offsets)."""
    lo_b = 0
    hi_b = seqlens.shape[0] - 1
    while hi_b - lo_b > 1:
        mid = (lo_b + hi_b) // 2
        if seqlens[mid] <= t:
            lo_b = mid
        else:
            hi_b = mid
    return lo_b


@cuda.jit
def _padded_rows(packed, seqlens, longest, padded, to_padded):
    """A block per padded row r = b * L + j: for j before sequence b's end, that row <-> packed row
    seqlens[b] + j, copied into padded (to_padded) or back into packed; past the end, zeros into
    padded (to_padded) or nothing. Rows are words (`_as_words`), a thread per word."""
    r = cuda.blockIdx.x
    b = r // longest
    j = r - b * longest
    c = cuda.threadIdx.x
    if j < seqlens[b + 1] - seqlens[b]:
        t = seqlens[b] + j
        while c < padded.shape[1]:
            if to_padded:
                padded[r, c] = packed[t, c]
            else:
                packed[t, c] = padded[r, c]
            c += cuda.blockDim.x
    elif to_padded:
        while c < padded.shape[1]:
            padded[r, c] = 0
            c += cuda.blockDim.x


@cuda.jit
def _length_mask(seqlens, pad_value, out):
    """out (B, L): 0 at positions before sequence b's end, pad_value after (the additive mask)."""
    b = cuda.blockIdx.y
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if j < out.shape[1]:
        out[b, j] = 0 if j < seqlens[b + 1] - seqlens[b] else pad_value


@cuda.jit
def _gather(src, index, out):
    t = cuda.blockIdx.x
    c = cuda.threadIdx.x
    while c < out.shape[1]:
        out[t, c] = src[index[t], c]
        c += cuda.blockDim.x


@cuda.jit
def _scatter(src, index, out):
    t = cuda.blockIdx.x
    c = cuda.threadIdx.x
    while c < src.shape[1]:
        out[index[t], c] = src[t, c]
        c += cuda.blockDim.x


# A row move copies bits: the rows are viewed as the widest unsigned words that each row of every
# array is made of (a float16 row of 768: 192 8-byte words), so the kernels load and store words,
# not 2-byte halves, a thread per word.
_WORDS = tuple(np.dtype(u) for u in (np.uint64, np.uint32, np.uint16, np.uint8))


def _fits(a, unit):
    """True where every row of the 2-D array `a` is whole `unit` words at `unit`-aligned addresses."""
    size = unit.itemsize
    return (a.strides[1] == a.itemsize and a.shape[1] * a.itemsize % size == 0 and address(a) % size == 0
            and (a.shape[0] <= 1 or a.strides[0] % size == 0))


def _as_words(*arrays):
    """The 2-D arrays (rows of equal bytes) as views of rows of the widest word all of them fit,
    or as they are (elements along a row not adjacent)."""
    for unit in _WORDS:
        if all(_fits(a, unit) for a in arrays):
            try:
                return tuple(a.view(unit) for a in arrays)
            except (TypeError, ValueError):   # an array module that refuses the view: elements
                break
    return arrays


def _rows(kernel, src2, index, out2):
    n, d = index.shape[0], src2.shape[1]
    if n and d:
        src, out = _as_words(src2, out2)
        launch(kernel, n, row_threads(src.shape[1]), src, index, out)
    return out2


def gather_rows(src2, index, out2):
    """Checked-arguments entry: out2[t] = src2[index[t]]; src2 (N, d), out2 (T, d), index (T,)."""
    return _rows(_gather, src2, index, out2)


def scatter_rows(src2, index, out2):
    """Checked-arguments entry: out2[index[t]] = src2[t]; the other rows of out2 are left as they are."""
    return _rows(_scatter, src2, index, out2)


def pack_offsets(fn, key_mask, batch, seq, like):
    """The `Packing` of key_mask (B, S) (checked: bool or 0/1 numbers; a CuPy mask is read on the
    host), with index and offsets on the device of `like` = (name, array)."""
    name, a = like
    xp_for(fn, name, a)
    if not isinstance(key_mask, np.ndarray):
        xp_for(fn, "key_mask", key_mask)
    checks.key_mask_values(fn, key_mask, batch, seq)
    host = key_mask if isinstance(key_mask, np.ndarray) else key_mask.get()
    cu, index = packing.offsets(host)
    return packing.Packing(batch, seq, cu, int(np.diff(cu).max(initial=0)), to_device(index, index.dtype, a),
                           to_device(cu, cu.dtype, a))


def to_device(host, dtype, like):
    """A host array as a C-contiguous array of ``dtype`` on the device of the array ``like``
    (copied without waiting for the GPU: `runtime.host_to_device`)."""
    if SIMULATOR:
        return np.ascontiguousarray(host, dtype)
    return host_to_device(host, dtype, device_id(like))


@functools.lru_cache(maxsize=None)
def _varlen_kernel(dtype):
    """For qkv and out of `dtype`; probs in the compute dtype."""
    ctype = compute_dtype(dtype).type
    zero, ninf = ctype(0), ctype(-np.inf)
    load, store = access(dtype)
    exp_sum = row_exp_sum(ctype)

    @cuda.jit
    def attention_varlen(qkv, seqlens, scale, probs, out):
        """qkv (T, 3d), out (T, d), probs (H, T, max_seqlen) scratch; block (t, h)."""
        t = cuda.blockIdx.x
        h = cuda.blockIdx.y
        nh = cuda.gridDim.y
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        d = out.shape[1]
        dh = d // nh
        lo_b = _sequence_of(seqlens, t)
        lo = seqlens[lo_b]
        n = seqlens[lo_b + 1] - lo
        qc = h * dh
        kc = d + qc
        buf = cuda.shared.array(MAX_THREADS, ctype)
        vals = cuda.local.array(PER, ctype)
        mx = ninf
        for i in range(PER):
            j = tid + i * nt
            s = ninf
            if j < n:
                s = zero
                for c in range(dh):
                    s += load(qkv[t, qc + c]) * load(qkv[lo + j, kc + c])
                s *= scale
                if s > mx or s != s:
                    mx = s
            vals[i] = s
        total = exp_sum(buf, vals, mx)[1]
        row = probs[h, t]
        for i in range(PER):
            j = tid + i * nt
            if j < n:
                row[j] = vals[i]
        cuda.syncthreads()
        vc = 2 * d + qc
        c = tid
        while c < dh:
            acc = zero
            for j in range(n):
                acc += row[j] * load(qkv[lo + j, vc + c])
            out[t, qc + c] = store(acc / total)
            c += nt
    return attention_varlen


def pads(pk):
    """True where `attend_varlen` takes the padded route for the Packing `pk` (module docstring)."""
    lengths = np.diff(pk.cu_seqlens)
    return pk.batch * pk.max_seqlen ** 2 <= PAD_WORK_RATIO * float(np.dot(lengths, lengths))


def _attend_padded(xp, qkv, pk, num_heads, scale, method, out):
    """The padded route: scatter to (B, L, 3d), padded attention, gather the real rows."""
    width = qkv.shape[1]
    nb, longest, d = pk.batch, pk.max_seqlen, out.shape[1]
    padded = xp.empty((nb * longest, width), qkv.dtype)
    _move_rows(qkv, pk, padded, True)         # zeros past the ends: finite, masked keys
    ct = compute_dtype(qkv.dtype)
    madd = xp.empty((nb, longest), ct)
    th = row_threads(longest)
    launch(_length_mask, (blocks(longest, th), nb), th, pk.seqlens, ct.type(finfo(qkv.dtype).min), madd)
    ctx = xp.empty((nb, longest, d), out.dtype)
    attend_packed(padded.reshape(nb, longest, width), madd, True, num_heads, scale, method, ctx)
    _move_rows(out, pk, ctx.reshape(nb * longest, d), False)
    return out


def _move_rows(packed, pk, padded, to_padded):
    """Packed rows (T, w) <-> the (B * L, w) rows padded to the longest sequence (`_padded_rows`)."""
    src, dst = _as_words(packed, padded)
    launch(_padded_rows, pk.batch * pk.max_seqlen, row_threads(dst.shape[1]), src, pk.seqlens, pk.max_seqlen, dst,
           to_padded)


def attend_varlen(qkv, pk, num_heads, scale, method, out):
    """Checked-arguments entry: out (T, d) = per sequence of the Packing `pk`, the attention of its
    rows of the packed projection qkv (T, 3d) over its own rows: padded to the longest sequence
    or in one variable-length kernel (the module docstring). `method` is the CPU's choice."""
    xp = xp_for("attention_varlen", "qkv", qkv)
    t = qkv.shape[0]
    if t == 0 or out.shape[1] == 0:
        return out
    target = out
    if SIMULATOR:   # it transfers only contiguous NumPy arrays; numba on a GPU takes the strided views
        qkv = np.ascontiguousarray(qkv)
        if not out.flags.c_contiguous:
            out = np.empty(out.shape, out.dtype)
    if pads(pk):
        _attend_padded(xp, qkv, pk, num_heads, scale, method, out)
    else:
        ct = compute_dtype(qkv.dtype)
        probs = xp.empty((num_heads, t, max(1, pk.max_seqlen)), ct)
        launch(_varlen_kernel(qkv.dtype), (t, num_heads),
               max(threads_for(pk.max_seqlen), row_threads(out.shape[1] // num_heads)),
               qkv, pk.seqlens, ct.type(scale), probs, out)
    if out is not target:
        target[...] = out
    return target
