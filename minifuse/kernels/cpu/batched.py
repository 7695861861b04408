"""Many small GEMMs at once: a batch of products cut into chunks, the chunks run by a pool of
Python threads, each product with BLAS at one thread.

Attention makes one small product per (sequence, head) (S = 128, Dh = 64: 1M multiply-adds).
Handed one by one to OpenBLAS, each product is split over all its threads and ends with a wait
for the slowest (about 200 waits per BERT layer); with a core busy, each of those waits can meet a
descheduled thread. Run with BLAS at one thread (``threads.single_threaded_blas``), they use one
core only. Here the batch is cut into ``CHUNKS_PER_THREAD`` chunks per thread and a pool of
``numba.get_num_threads()`` threads takes them (NumPy releases the GIL inside BLAS): every core
works, the threads meet once per call, and a descheduled thread delays only the chunk it holds
while the others take the rest (the timings: BENCHMARKS.md, the busy-core section).
"""
import concurrent.futures
import math
import threading

import numba
import numpy as np

from ...threads import single_threaded_blas

CHUNKS_PER_THREAD = 4
# Below this many multiply-adds in all, the products run in the caller's thread, as one NumPy
# call: handing chunks to the pool costs tens of microseconds, more than such products take.
POOL_MIN_WORK = 2 ** 22

_POOL = {"threads": 0, "executor": None}
_LOCK = threading.Lock()


def _executor(threads):
    with _LOCK:
        if _POOL["threads"] != threads:
            if _POOL["executor"] is not None:
                _POOL["executor"].shutdown(wait=False)
            _POOL["executor"] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="minifuse-gemm")
            _POOL["threads"] = threads
        return _POOL["executor"]


def run(tasks, work=None):
    """Call every function of ``tasks`` (no arguments), spread over the pool, BLAS at one thread;
    returns when all have returned (the first exception re-raised). ``work``: the multiply-adds
    of all of them; below ``POOL_MIN_WORK`` they run here, one after the other."""
    threads = numba.get_num_threads()
    if work is not None and work < POOL_MIN_WORK:
        for task in tasks:
            task()
        return
    with single_threaded_blas():
        if threads == 1 or len(tasks) <= 1:
            for task in tasks:
                task()
            return
        groups = _groups(tasks, threads * CHUNKS_PER_THREAD)
        for future in [_executor(threads).submit(_call_all, group) for group in groups]:
            future.result()


def _groups(tasks, pieces):
    """``tasks`` in at most ``pieces`` runs of neighbours (a hand-over per run, not per task)."""
    step = math.ceil(len(tasks) / min(len(tasks), pieces))
    return [tasks[i:i + step] for i in range(0, len(tasks), step)]


def _call_all(tasks):
    for task in tasks:
        task()


def chunks(lead, pieces):
    """About ``pieces`` index tuples that cut the leading dims ``lead`` (a shape) into disjoint
    blocks covering all of it: slices of the first dim, or of the second within each index of
    the first when the first is shorter than ``pieces``."""
    if not lead:
        return [()]
    if 0 in lead:
        return []
    first = lead[0]
    if first >= pieces or len(lead) == 1:
        step = math.ceil(first / min(first, pieces))
        return [(slice(lo, lo + step),) for lo in range(0, first, step)]
    per = math.ceil(pieces / first)
    step = math.ceil(lead[1] / min(lead[1], per))
    return [(i, slice(lo, lo + step)) for i in range(first) for lo in range(0, lead[1], step)]


def matmul(a, b, out):
    """out[...] = a @ b for stacked (..., m, k) and (..., k, n) arrays with the same leading dims
    (any strides); out (..., m, n). Returns out."""
    if a.size * b.shape[-1] < POOL_MIN_WORK:
        return np.matmul(a, b, out=out)
    pieces = numba.get_num_threads() * CHUNKS_PER_THREAD
    run([lambda s=s: np.matmul(a[s], b[s], out=out[s]) for s in chunks(a.shape[:-2], pieces)])
    return out
