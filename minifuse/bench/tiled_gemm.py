"""A one-kernel GEMM + bias + activation in numba, for teaching and for comparison with the
cuBLAS + fused-epilogue path (`minifuse.kernels.cuda.linear_act`), which the layers use (cuBLAS is
faster). Timed by `python -m minifuse.bench cuda`.

    out (N, M) = act(x (N, K) @ w (M, K).T + bias (M,))

Thread mapping (the classic register-blocked SGEMM):
- one block computes a BM x BN tile of `out`; it has (BM/TM) * (BN/TN) threads, and thread
  (ty, tx) owns TM x TN outputs at rows ty + i*(BM/TM) and columns tx + j*(BN/TN) (strided, so
  that the 16 threads of a half-warp write 16 neighbouring columns: coalesced stores);
- K is walked in steps of BK: the block copies an x tile (BM x BK) and a w tile (BN x BK) into
  shared memory, transposed to [k][row] so that the inner loop reads rows of shared memory;
- per k, each thread loads TM values of x and TN of w into registers and does TM*TN FMAs: every
  shared-memory load serves TN (or TM) multiply-adds, which is what lifts it above a naive kernel.
The epilogue (bias, activation) is applied to the accumulators in registers before the single
store: the fusion is free here. What is not free is everything cuBLAS does better (tensor-core
free FP32 still needs double-buffered, vectorised 128-bit loads and warp tiling for 60-90% of peak).
"""
import functools

import numpy as np

from minifuse.kernels import validate
from minifuse.kernels.activations import NAMES
from minifuse.kernels.checks import choice
from minifuse.kernels.cuda.checks import CHECKS
from minifuse.kernels.cuda.mathfn import activations, compute_dtype
from minifuse.kernels.cuda.runtime import blocks, cuda, launch

CONFIGS = {"64x64": (64, 64, 16, 4, 4), "128x128": (128, 128, 8, 8, 8)}


@functools.lru_cache(maxsize=None)
def _kernel(config, activation, ct):
    bm, bn, bk, tm, tn = CONFIGS[config]
    ty_n, tx_n = bm // tm, bn // tn          # thread grid of a block
    nthreads = ty_n * tx_n
    act = activations(ct)[activation]
    ctype = np.dtype(ct).type
    zero = ctype(0)

    @cuda.jit
    def gemm_bias_act(x, w, bias, has_bias, out):
        n, k = x.shape
        m = w.shape[0]
        tid = cuda.threadIdx.x
        ty = tid // tx_n
        tx = tid % tx_n
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        xs = cuda.shared.array((bk, bm), ctype)
        ws = cuda.shared.array((bk, bn), ctype)
        acc = cuda.local.array((tm, tn), ctype)
        a = cuda.local.array(tm, ctype)
        b = cuda.local.array(tn, ctype)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = zero
        for k0 in range(0, k, bk):
            # cooperative tile loads: element e of the tile is (row e // bk, k e % bk)
            for e in range(tid, bm * bk, nthreads):
                r = e // bk
                kk = e % bk
                gr = row0 + r
                gk = k0 + kk
                xs[kk, r] = ctype(x[gr, gk]) if gr < n and gk < k else zero
            for e in range(tid, bn * bk, nthreads):
                c = e // bk
                kk = e % bk
                gc = col0 + c
                gk = k0 + kk
                ws[kk, c] = ctype(w[gc, gk]) if gc < m and gk < k else zero
            cuda.syncthreads()
            for kk in range(bk):
                for i in range(tm):
                    a[i] = xs[kk, ty + i * ty_n]
                for j in range(tn):
                    b[j] = ws[kk, tx + j * tx_n]
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] += a[i] * b[j]
            cuda.syncthreads()
        for i in range(tm):
            r = row0 + ty + i * ty_n
            if r < n:
                for j in range(tn):
                    c = col0 + tx + j * tx_n
                    if c < m:
                        v = acc[i, j]
                        if has_bias:
                            v += ctype(bias[c])
                        out[r, c] = act(v)
    return gemm_bias_act, (bm, bn, nthreads)


def tiled_linear_act(x, weight, bias, activation, out=None, config="128x128"):
    """act(x @ weight.T + bias) in ONE numba kernel: x (N, K), weight (M, K), bias (M,) or None.

    config: '64x64' (4x4 outputs per thread) or '128x128' (8x8 per thread); 256 threads each.
    """
    fn = "tiled_linear_act"
    CHECKS.float_array(fn, "x", x, ndim=2)
    like = ("x", x)
    m = validate.weight(CHECKS, fn, "weight", weight, x.shape[1], like)
    bias = CHECKS.vector(fn, "bias", bias, m, "(M,)", like)
    choice(fn, "activation", activation, NAMES)
    choice(fn, "config", config, CONFIGS)
    out = CHECKS.output(fn, out, (x.shape[0], m), like, [("x", x), ("weight", weight), ("bias", bias)])
    if out.size == 0:
        return out
    kernel, (bm, bn, nthreads) = _kernel(config, activation, compute_dtype(x.dtype))
    launch(kernel, (blocks(m, bn), blocks(x.shape[0], bm)), nthreads, x, weight,
           weight[0] if bias is None else bias, bias is not None, out)
    return out
