"""The CUDA runtime glue that every kernel module here goes through: importing numba.cuda,
choosing the array module, converting arrays and launching kernels on CuPy's stream.

NumPy >= 2.5 removed ``np.row_stack``; numba-cuda 0.30.x still names it in its NumPy typing
tables and fails to compile ANY kernel ("module 'numpy' has no attribute 'row_stack'"). The
alias below (row_stack was always an alias of vstack) is the one workaround in minifuse; it is
set only where NumPy lacks the name, before numba.cuda is imported or compiles anything.

Under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU, no CuPy) the same kernels
run on NumPy arrays: `array_module` returns numpy, `launch` calls the kernel without a stream.
"""
from collections import OrderedDict

import numpy as np

if not hasattr(np, "row_stack"):  # NumPy >= 2.5 (see the module docstring)
    np.row_stack = np.vstack

from numba import config as _config  # noqa: E402
from numba import cuda  # noqa: E402

SIMULATOR = bool(_config.ENABLE_CUDASIM)

# The smallest block: a warp on a GPU. The simulator runs every thread as a Python thread and
# switches between all of a block's threads at each syncthreads, so there blocks start at 4
# threads (a power of two, as the tree reductions need): same kernels, several times faster tests.
MIN_THREADS = 4 if SIMULATOR else 32

__all__ = ["cuda", "SIMULATOR", "MIN_THREADS", "xp_for", "device_array", "stream", "launch", "blocks"]


def xp_for(fn, name, a):
    """The array module that owns ``a``: cupy for CuPy arrays; numpy only under the simulator.
    Anything else is a TypeError naming the function and the argument."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy
        return cupy
    if SIMULATOR and isinstance(a, np.ndarray):
        return np
    want = "a cupy.ndarray (or a numpy.ndarray under NUMBA_ENABLE_CUDASIM=1)"
    raise TypeError(f"{fn}: '{name}' must be {want}, got {type(a).__name__}")


# Python-side launch cost is what limits small and medium shapes (about 300 us per numba launch
# measured on an H100 with fresh conversions each call, against a 33 us epilogue). Two caches cut
# the repeated work; both are keyed by raw addresses and hold no memory:
# - numba views of CuPy arrays, keyed on (pointer, shape, strides, dtype). A view made with
#   owner=None is only that tuple, so when CuPy's pool hands the same block out again with the same
#   layout, the cached view is exactly what a fresh conversion would give;
# - numba's wrapper of a CUDA stream, keyed on the stream's handle.
_VIEWS = OrderedDict()
_VIEWS_MAX = 512
_STREAMS = {}


def device_array(a):
    """``a`` as numba sees it. CuPy arrays are wrapped without the stream synchronisation that
    CUDA Array Interface consumers do by default (that sync would cost time and is illegal while
    a CUDA graph is being captured); NumPy arrays pass through to the simulator."""
    if isinstance(a, np.ndarray) or a is None or np.isscalar(a):
        return a
    cai = a.__cuda_array_interface__
    key = (cai["data"][0], cai["shape"], cai["strides"], cai["typestr"])
    view = _VIEWS.get(key)
    if view is None:
        view = cuda.from_cuda_array_interface(cai, owner=None, sync=False)
        _VIEWS[key] = view
        if len(_VIEWS) > _VIEWS_MAX:
            _VIEWS.popitem(last=False)
    return view


def stream():
    """numba's view of CuPy's current stream, so numba launches queue behind CuPy's GEMMs
    (and are captured with them into a CUDA graph); None under the simulator."""
    if SIMULATOR:
        return None
    import cupy
    ptr = cupy.cuda.get_current_stream().ptr
    s = _STREAMS.get(ptr)
    if s is None:
        if len(_STREAMS) > 64:
            _STREAMS.clear()
        s = _STREAMS[ptr] = cuda.external_stream(ptr)
    return s


def launch(kernel, grid, block, *args):
    """``kernel[grid, block, stream](*args)`` with every array converted once."""
    args = tuple(device_array(a) for a in args)
    s = stream()
    if s is None:
        kernel[grid, block](*args)
    else:
        kernel[grid, block, s](*args)


def blocks(n, threads):
    """Blocks of ``threads`` threads that cover ``n`` items (at least one)."""
    return max(1, -(-int(n) // threads))
