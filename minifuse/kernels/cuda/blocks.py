"""Row kernels' building blocks: a block per row, row elements in registers, block reductions.

Thread mapping: one block per row; thread t of T holds the row elements t, t + T, ...,
t + (PER - 1) T in registers (a local array of compile-time size PER), so a row is read from
memory once and written once. T is a power of two from 32 (`runtime.MIN_THREADS`) to 1024, the
smallest with T * PER >= row length. Used by LayerNorm (layernorm.py) and the softmax (attention.py),
whose short rows may take fewer than 32 threads (`row_layout`'s ``fewest``).

Row sums are warp reductions: five register exchanges (``shfl_xor_sync``) between the 32 threads
of a warp, no shared memory and no barrier (a row of T < 32 threads: log2(T) exchanges within
its aligned group of T lanes); a row of several warps then adds the warps' results through
shared memory, one barrier. The CUDA simulator has no warp shuffles: there the same
reductions are a tree over shared memory (log2(T) steps, a barrier each), same results up to
the order of the additions.

Short rows (T < 128) are grouped: a block of (T, G) threads takes G rows, row threadIdx.y, so that
a block has at least `GROUP_THREADS` threads (an SM holds at most 32 blocks: blocks of 32 threads
would fill half its thread slots). Each row's reduction uses its own slice of the shared buffer;
every thread of the block takes part in every step (threads of rows past the end too), so the
block-wide barriers stay uniform.
"""
from .runtime import MIN_THREADS, SIMULATOR, cuda

PER = 8          # row elements per thread (registers)
MAX_THREADS = 1024
MAX_ROW = MAX_THREADS * PER
# Threads per block at least, for rows of fewer threads (`rows_per_block`); under the simulator
# (each thread a Python thread) two rows per block: grouping still runs, at little cost.
GROUP_THREADS = 2 * MIN_THREADS if SIMULATOR else 128
# Blocks that add up columns: (columns, row lanes) threads, each lane summing every Y-th row of its
# column (reads along a row are coalesced), the lanes then added in order through shared memory.
COLUMN_THREADS = (4, 2) if SIMULATOR else (32, 8)


def threads_for(width):
    """Threads per block for rows of `width` elements (`checks.CHECKS.row_length` has checked it)."""
    t = MIN_THREADS
    while t * PER < width:
        t *= 2
    return t


def row_layout(width, fewest=MIN_THREADS):
    """(threads, per) for the word-wise row kernels (LayerNorm and softmax forward, `words.py`):
    rows of `width` words, `per` words a thread (at most PER), so that a short row does not hold
    registers for words it never has; `threads` a power of two from ``fewest`` (below 32: several
    rows share a warp, each in its own aligned group of lanes)."""
    per = min(PER, max(1, -(-width // fewest)))
    t = fewest
    while t * per < width:
        t *= 2
    return t, per


def rows_per_block(threads):
    """Rows a block of `threads` threads per row takes (blockDim.y)."""
    return max(1, GROUP_THREADS // threads)


@cuda.jit(device=True, inline=True)
def _add(a, b):
    return a + b


@cuda.jit(device=True, inline=True)
def _max(a, b):
    return b if b > a or b != b else a           # a NaN anywhere wins (NaN compares False)


FULL_WARP = 0xFFFFFFFF      # every lane of the warp takes part in the exchange
WARP = 32


def _tree_reduce(combine):
    @cuda.jit(device=True)
    def block_reduce(buf, v):
        """combine() of v over the threads of this thread's row (threadIdx.x of one threadIdx.y),
        returned to each of them (buf: shared, >= the block's threads)."""
        tid = cuda.threadIdx.x
        base = cuda.threadIdx.y * cuda.blockDim.x
        buf[base + tid] = v
        cuda.syncthreads()
        s = cuda.blockDim.x // 2
        while s > 0:
            if tid < s:
                buf[base + tid] = combine(buf[base + tid], buf[base + tid + s])
            cuda.syncthreads()
            s //= 2
        total = buf[base]
        cuda.syncthreads()           # buf is reused by the next reduction
        return total
    return block_reduce


def _warp_reduce(combine):
    @cuda.jit(device=True)
    def block_reduce(buf, v):
        """combine() of v over the threads of this thread's row (threadIdx.x of one threadIdx.y),
        returned to each of them (buf: shared, >= the block's warps). Every thread of the block
        must call it (the shuffles name the whole warp; the barrier, the whole block)."""
        nt = cuda.blockDim.x
        off = min(nt, WARP) // 2
        while off > 0:               # butterfly: after it every lane holds its row's (or warp's) result
            v = combine(v, cuda.shfl_xor_sync(FULL_WARP, v, off))
            off //= 2
        if nt <= WARP:               # a row within one warp (the same for the whole block)
            return v
        warps = nt // WARP
        tid = cuda.threadIdx.x
        base = cuda.threadIdx.y * warps
        if tid % WARP == 0:
            buf[base + tid // WARP] = v
        cuda.syncthreads()
        total = buf[base]
        for w in range(1, warps):
            total = combine(total, buf[base + w])
        cuda.syncthreads()           # buf is reused by the next reduction
        return total
    return block_reduce


_block_reduce = _tree_reduce if SIMULATOR else _warp_reduce
block_sum, block_max = _block_reduce(_add), _block_reduce(_max)
