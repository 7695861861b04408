"""CUDA-graph capture and replay: fixed-shape inference (`CudaGraph`) and any block of GPU work,
a fused training step included (`recording`, behind ``mf.cuda.graph``).

A BERT-base layer is ~16 launches (cuBLASLt GEMMs, head copies, numba kernels); each numba launch costs
30-130 us of Python, so at small batch sizes the GPU waits for the CPU. A CUDA graph records the
launches once and replays them all with one call (measured ~3.6 us per kernel on an H100).

How: `fn(*args)` runs once eagerly (compiles the numba kernels, fills CuPy's memory pool), then
again on a private non-blocking stream inside `begin_capture()` / `end_capture()`. Numba kernels
join the capture because `runtime.launch` launches on CuPy's current stream and wraps arrays
with `sync=False` (a synchronisation is illegal during capture). Every buffer allocated during
capture is held by the graph object, so the memory pool cannot hand it to anyone else while the
graph may still write it.

Limit: CuPy (13 and 14) refuses any cuBLAS call of its own while a stream is being captured
("calling cuBLAS API during stream capture is currently unsupported": cuBLAS would need a
user-provided workspace). minifuse's float32, float16 and bfloat16 GEMMs go through cuBLASLt with
a workspace of their own (cublaslt.py): the kernel API (`linear_act`, `mlp`, `attention`, a whole
`transformer_layer`) and the fused training functions (forward and backward: `fusions`) are
captured. float64 GEMMs and the taped ops' products use CuPy's matmul, and capturing them raises
the RuntimeError below. Numba kernels and CuPy elementwise work are captured.

Replay reuses the same buffers: write new inputs into the arrays that were captured (`graph.args`)
and read the result from `graph.output` (overwritten by the next replay).
"""
import contextlib

from .runtime import SIMULATOR


@contextlib.contextmanager
def recording(held, before=None, caller="CudaGraph", pool=None):
    """Record the GPU work queued inside the block: yields a dict whose "graph" is the captured
    cupy Graph once the block exits without an error. The work runs on a private non-blocking
    stream that first waits for the caller's (the arguments may still be being written there: an
    upload queued behind work in flight); ``before()``, if given, runs on that stream before the
    capture starts (a warm-up), then the stream is synchronized. Every buffer allocated during
    the capture is appended to ``held``: kept alive with the graph, so that the memory pool
    cannot hand it to anyone else while the graph may still write it. Or, with ``pool`` (a
    ``cupy.cuda.MemoryPool`` that only the graphs of one owner use, ``held`` None), buffers
    come from that pool: one freed during the capture is reused later in it (the graph runs its
    work in order), and no one else can be handed it."""
    if SIMULATOR:
        raise RuntimeError(f"{caller}: CUDA graphs need a real GPU (not NUMBA_ENABLE_CUDASIM)")
    import cupy
    if pool is not None:
        hold = pool.malloc
    else:
        default = cupy.get_default_memory_pool()

        def hold(size):
            mem = default.malloc(size)
            held.append(mem)
            return mem

    stream = cupy.cuda.Stream(non_blocking=True)
    stream.wait_event(cupy.cuda.get_current_stream().record())
    box = {}
    with stream:
        if before is not None:
            before()
        stream.synchronize()
        with cupy.cuda.using_allocator(hold):
            stream.begin_capture()
            try:
                yield box
            except NotImplementedError as e:
                _end_quietly(stream)
                raise RuntimeError(f"{caller}: {e}. CuPy cannot capture cuBLAS (its matmul: float64 GEMMs, "
                                   f"the taped ops' products); see minifuse/kernels/cuda/graphs.py") from e
            except BaseException:
                _end_quietly(stream)
                raise
            box["graph"] = stream.end_capture()


class CudaGraph:
    """graph = CudaGraph(fn, *args); out = graph.replay()  (same as fn(*args), one launch)."""

    def __init__(self, fn, *args, warmup=1):
        self.args = args
        self._held = []                      # buffers the graph writes: kept alive with it

        def before():
            for _ in range(warmup):
                fn(*args)
        with recording(self._held, before) as box:
            self.output = fn(*args)
        self.graph = box["graph"]

    def replay(self, stream=None):
        """Launch the captured work on `stream` (default: CuPy's current stream); returns
        `self.output`, valid once that stream reaches this point."""
        import cupy
        self.graph.launch(stream=stream or cupy.cuda.get_current_stream())
        return self.output


def _end_quietly(stream):
    """End a failed capture so that the stream is usable again."""
    try:
        stream.end_capture()
    except Exception:  # the capture was invalidated by the error; nothing to keep
        pass
