"""Row kernels' building blocks: a block per row, row elements in registers, block reductions.

Thread mapping: one block per row; thread t of T holds the row elements t, t + T, ...,
t + (PER - 1) T in registers (a local array of compile-time size PER), so a row is read from
memory once and written once. Row sums are block reductions through shared memory (a tree of
log2(T) steps; shared memory rather than warp shuffles so that the same kernel runs under the
CUDA simulator). T is a power of two from 32 (`runtime.MIN_THREADS`) to 1024, the smallest with
T * PER >= row length. Used by LayerNorm (layernorm.py) and the softmax (attention.py).
"""
from .runtime import MIN_THREADS, cuda

PER = 8          # row elements per thread (registers)
MAX_THREADS = 1024
MAX_ROW = MAX_THREADS * PER


def threads_for(width):
    """Threads per block for rows of `width` elements (`checks.CHECKS.row_length` has checked it)."""
    t = MIN_THREADS
    while t * PER < width:
        t *= 2
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


block_sum, block_max = _block_reduce(_add), _block_reduce(_max)
