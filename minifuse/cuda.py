"""``mf.cuda``: what PyTorch users ask ``torch.cuda`` about the GPU."""
import contextlib

from .device import Device, _cupy, cuda_available
from .graphed import make_graphed_callables  # noqa: F401  (torch.cuda's name)

__all__ = ["is_available", "device_count", "synchronize", "CUDAGraph", "graph", "make_graphed_callables"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one GPU (the same as ``mf.cuda_available()``)."""
    return cuda_available()


def device_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or a GPU)."""
    return _cupy().cuda.runtime.getDeviceCount() if cuda_available() else 0


def synchronize(device=None) -> None:
    """Wait until all work queued on the GPU ``device`` (None: the current one; an int, 'cuda:N'
    or a Device) has finished, as ``torch.cuda.synchronize``. Work on a GPU runs asynchronously:
    a timer read after a call measures only the time to queue it, unless it synchronizes first.
    Without CuPy or a GPU, the RuntimeError that says what to install."""
    if device is not None:
        if isinstance(device, bool) or not isinstance(device, (int, str, Device)):
            raise TypeError(f"synchronize: 'device' must be None, an int, a str such as 'cuda:0' or a "
                            f"Device, got {type(device).__name__}")
        if not isinstance(device, int) and Device(device).type != "cuda":
            raise ValueError(f"synchronize: 'device' must be a CUDA device, got {str(Device(device))!r}")
    cupy = _cupy()
    if device is None:
        cupy.cuda.Device().synchronize()
        return
    index = device if isinstance(device, int) else Device(device).index
    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise ValueError(f"synchronize: 'device' {index} is not one of the {count} GPUs CuPy sees")
    cupy.cuda.Device(index).synchronize()


class CUDAGraph:
    """GPU work captured once by ``with mf.cuda.graph(g):`` and run again by ``g.replay()``, as
    ``torch.cuda.CUDAGraph``: one launch for the whole block instead of one per kernel, which is
    what a step bound by Python's launch cost needs.

        step()                              # warm up first: kernels compile, GEMMs are timed
        g = mf.cuda.CUDAGraph()
        with mf.cuda.graph(g):              # queued, not run: nothing is computed here
            for p in params: p.grad = None
            layer(x).backward(dy)
        x.data[...] = new_batch             # the captured arrays are the graph's inputs ...
        g.replay()                          # ... and p.grad its outputs, recomputed in place

    What can be captured: the kernel API and the fused layers (``fused_training=True``,
    ``fusions.fused_*``) in float32, float16 and bfloat16, forward and backward, under
    ``mf.autocast`` too. Not: float64 GEMMs and the taped ops' products (CuPy's cuBLAS: a
    RuntimeError at capture), anything that reads a value on the host (``.item()``, a mask that
    packs sequences). A replay reuses every buffer of the capture: write new inputs into the
    arrays the block read, and read results from the arrays it wrote before the next replay."""

    def __init__(self):
        self._graph = None
        self._held = []          # the buffers allocated during the capture (the graph writes them)

    def replay(self):
        """Launch the captured work on CuPy's current stream (asynchronous, as every GPU call)."""
        if self._graph is None:
            raise RuntimeError("CUDAGraph.replay: nothing captured yet; capture with `with mf.cuda.graph(g): ...`")
        self._graph.launch(stream=_cupy().cuda.get_current_stream())

    def reset(self):
        """Drop the captured work and the memory it holds."""
        self._graph, self._held = None, []


@contextlib.contextmanager
def graph(cuda_graph):
    """Capture the GPU work queued inside the block into ``cuda_graph`` (a `CUDAGraph`), as
    ``torch.cuda.graph``: the block runs its Python once on a private stream that waits for the
    current one, and its kernels are recorded, not run; ``cuda_graph.replay()`` runs them. Run
    the block once before capturing it (kernels compile on first use and GEMM algorithms are
    timed per shape; neither can happen inside a capture). An error inside the block ends the
    capture and leaves ``cuda_graph`` empty."""
    if not isinstance(cuda_graph, CUDAGraph):
        raise TypeError(f"graph: 'cuda_graph' must be a mf.cuda.CUDAGraph, got {type(cuda_graph).__name__}")
    _cupy()
    from .kernels.cuda.graphs import recording
    cuda_graph.reset()
    held = []
    with recording(held, caller="mf.cuda.graph") as box:
        yield cuda_graph
    cuda_graph._graph, cuda_graph._held = box["graph"], held
