"""Row kernels: residual + LayerNorm, and the masked softmax of attention scores.

Thread mapping: one block per row; thread t of T holds the row elements t, t + T, ...,
t + (PER - 1) T in registers (a local array of compile-time size PER), so a row is read from
memory once and written once. Row sums are block reductions through shared memory (a tree of
log2(T) steps; shared memory rather than warp shuffles so that the same kernel runs under the
CUDA simulator). T is a power of two from 32 (`runtime.MIN_THREADS`) to 1024, the smallest with
T * PER >= row length.

The training variants (`minifuse.kernels.cuda.training`, `attention_training`) are these kernels
with two more outputs switched on: LayerNorm's xhat and rstd, the softmax's row max and row sum.
"""
import functools
import math

import numpy as np

from .. import validate
from . import checks
from .mathfn import compute_dtype
from .runtime import MIN_THREADS, blocks, cuda, launch, row_threads, xp_for

PER = 8          # row elements per thread (registers)
MAX_THREADS = 1024


def threads_for(width, fn):
    t = MIN_THREADS
    while t * PER < width:
        t *= 2
    if t > MAX_THREADS:
        raise ValueError(f"{fn}: rows of {width} elements are longer than the CUDA kernel's limit "
                         f"of {MAX_THREADS * PER}")
    return t


@cuda.jit(device=True, inline=True)
def _add(a, b):
    return a + b


@cuda.jit(device=True, inline=True)
def _max(a, b):
    return b if b > a or b != b else a           # a NaN anywhere wins (NaN compares False)


def _block_reduce(combine):
    @cuda.jit(device=True)
    def block_reduce(buf, v):
        """combine() of v over the block's threads, returned to every thread (buf: shared, >= T)."""
        tid = cuda.threadIdx.x
        buf[tid] = v
        cuda.syncthreads()
        s = cuda.blockDim.x // 2
        while s > 0:
            if tid < s:
                buf[tid] = combine(buf[tid], buf[tid + s])
            cuda.syncthreads()
            s //= 2
        total = buf[0]
        cuda.syncthreads()           # buf is reused by the next reduction
        return total
    return block_reduce


_block_sum, _block_max = _block_reduce(_add), _block_reduce(_max)


@functools.lru_cache(maxsize=None)
def _layer_norm_kernel(ct):
    ctype = np.dtype(ct).type
    block_sum = _block_sum
    zero = ctype(0)

    @cuda.jit
    def residual_layer_norm(x, res, has_res, bias, has_bias, gamma, beta, eps, out, xhat, rstd, keep):
        """out = LN(x + res + bias) gamma + beta; with keep (training) also xhat = (v - mean) rstd
        and rstd per row, what the fused backward reads."""
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        d = x.shape[1]
        buf = cuda.shared.array(MAX_THREADS, ctype)
        vals = cuda.local.array(PER, ctype)
        s = zero
        for i in range(PER):
            j = tid + i * nt
            t = zero
            if j < d:
                t = ctype(x[row, j])
                if has_res:
                    t += ctype(res[row, j])
                if has_bias:
                    t += ctype(bias[j])
            vals[i] = t
            s += t
        mean = block_sum(buf, s) / ctype(d)
        sq = zero
        for i in range(PER):
            if tid + i * nt < d:
                c = vals[i] - mean
                sq += c * c
        r = ctype(1) / math.sqrt(block_sum(buf, sq) / ctype(d) + eps)
        for i in range(PER):
            j = tid + i * nt
            if j < d:
                v = (vals[i] - mean) * r
                out[row, j] = v * ctype(gamma[j]) + ctype(beta[j])
                if keep:
                    xhat[row, j] = v
        if keep and tid == 0:
            rstd[row] = r
    return residual_layer_norm


def apply_residual_layer_norm(x2, res2, bias, gamma, beta, eps, out2, xhat=None, rstd=None):
    """Checked-arguments entry: x2, res2, out2 (N, D) C-contiguous (res2 and bias may be None);
    xhat (N, D) and rstd (N,) are written too when given (training keeps them for backward)."""
    n, d = x2.shape
    if n == 0:
        return out2
    ct = compute_dtype(x2.dtype)
    keep = xhat is not None
    launch(_layer_norm_kernel(ct), n, threads_for(d, "residual_layer_norm"),
           x2, x2 if res2 is None else res2, res2 is not None,
           gamma if bias is None else bias, bias is not None, gamma, beta, ct.type(eps), out2,
           xhat if keep else out2[:0], rstd if keep else out2[0, :0], keep)
    return out2


def residual_layer_norm(x, residual, gamma, beta, eps, out=None):
    """LayerNorm(x + residual) over the last dim (biased variance); residual None = LayerNorm(x).

    x, residual (..., D), gamma, beta (D,) -> (..., D).
    """
    fn = "residual_layer_norm"
    gamma, beta = validate.residual_layer_norm(checks.CHECKS, fn, x, residual, gamma, beta, eps)
    xp = xp_for(fn, "x", x)
    d = x.shape[-1]
    threads_for(d, fn)
    out = checks.output(fn, out, x.shape, ("x", x), [("x", x), ("residual", residual)])
    res2 = None if residual is None else checks.rows(xp, residual, d)
    apply_residual_layer_norm(checks.rows(xp, x, d), res2, None, gamma, beta, eps, out.reshape(-1, d))
    return out


@functools.lru_cache(maxsize=None)
def _softmax_kernel(ct):
    ctype = np.dtype(ct).type
    block_sum, block_max = _block_sum, _block_max
    zero, ninf = ctype(0), ctype(-np.inf)

    @cuda.jit
    def masked_softmax(s, rows_per_batch, mask_add, has_mask, scale, rowmax, rowsum, keep):
        """s (R, Sk) in place: softmax(s * scale + mask_add[row // rows_per_batch]); with keep
        (training) also each row's max and sum of exp(t - max), what the fused backward reads."""
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        sk = s.shape[1]
        b = row // rows_per_batch
        buf = cuda.shared.array(MAX_THREADS, ctype)
        vals = cuda.local.array(PER, ctype)
        mx = ninf
        for i in range(PER):
            j = tid + i * nt
            t = ninf
            if j < sk:
                t = ctype(s[row, j]) * scale
                if has_mask:
                    t += mask_add[b, j]
                if t > mx or t != t:
                    mx = t
            vals[i] = t
        mx = block_max(buf, mx)
        total = zero
        for i in range(PER):
            e = math.exp(vals[i] - mx) if tid + i * nt < sk else zero
            vals[i] = e
            total += e
        total = block_sum(buf, total)
        inv = ctype(1) / total
        for i in range(PER):
            j = tid + i * nt
            if j < sk:
                s[row, j] = vals[i] * inv
        if keep and tid == 0:
            rowmax[row] = mx
            rowsum[row] = total
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


def mask_add(xp, key_mask, dtype):
    """key_mask (B, Sk), 1 keep / 0 pad -> the additive (B, Sk) mask: 0 / finfo(dtype).min.
    One kernel (CuPy's `where(mask == 0, ...).astype(...)` was three launches, ~90 us of Python)."""
    ct = compute_dtype(dtype)
    nb, sk = key_mask.shape
    out = xp.empty((nb, sk), ct)
    if out.size:
        t = row_threads(sk)
        launch(_mask_add_kernel(ct), (blocks(sk, t), nb), t, key_mask, ct.type(np.finfo(dtype).min), out)
    return out


def launch_masked_softmax(scores2, rows_per_batch, madd, has_mask, scale, rowmax=None, rowsum=None):
    """scores2 (R, Sk) C-contiguous, in place, madd from `mask_add` (any (B, Sk) when not
    has_mask); rowmax, rowsum (R,) written when given."""
    r, sk = scores2.shape
    if r == 0:
        return scores2
    ct = compute_dtype(scores2.dtype)
    keep = rowmax is not None
    launch(_softmax_kernel(ct), r, threads_for(sk, "attention"), scores2, rows_per_batch, madd,
           has_mask, ct.type(scale), rowmax if keep else scores2[0, :0], rowsum if keep else scores2[0, :0],
           keep)
    return scores2


def apply_masked_softmax(xp, scores2, rows_per_batch, key_mask, scale):
    """scores2 (R, Sk) C-contiguous, in place; key_mask (B, Sk) or None: padded keys (mask 0)
    get finfo(scores dtype).min added after scaling, as the unfused path does."""
    ct = compute_dtype(scores2.dtype)
    madd = xp.zeros((1, 1), ct) if key_mask is None else mask_add(xp, key_mask, scores2.dtype)
    return launch_masked_softmax(scores2, rows_per_batch, madd, key_mask is not None, scale)
