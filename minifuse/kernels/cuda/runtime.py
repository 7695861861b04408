"""The CUDA runtime glue that every kernel module here goes through: importing numba.cuda,
choosing the array module, converting arrays and launching kernels on CuPy's stream.

NumPy >= 2.5 removed ``np.row_stack``; numba-cuda 0.30.x still names it in its NumPy typing
tables and fails to compile ANY kernel ("module 'numpy' has no attribute 'row_stack'"). The
alias below (row_stack was always an alias of vstack) is the one workaround in minifuse; it is
set only where NumPy lacks the name, before numba.cuda is imported or compiles anything.

Under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU, no CuPy) the same kernels
run on NumPy arrays: `array_module` returns numpy, `launch` calls the kernel without a stream.

numba has no bfloat16 type: `device_array` hands a bfloat16 array (CuPy's or NumPy's) to a
kernel as a uint16 view of the same memory, its bits, which the kernels convert themselves
(storage.py). Under the simulator too: given the ml_dtypes array, Python would convert each
element correctly on its own and hide any error in the kernels' conversion.
"""
import contextlib
import ctypes
import struct
import threading
from collections import OrderedDict

import numpy as np

if not hasattr(np, "row_stack"):  # NumPy >= 2.5 (see the module docstring)
    np.row_stack = np.vstack

from numba import config as _config  # noqa: E402
from numba import cuda  # noqa: E402

from ...dtypes import bfloat16 as _bfloat16  # noqa: E402

SIMULATOR = bool(_config.ENABLE_CUDASIM)

# The smallest block: a warp on a GPU. The simulator runs every thread as a Python thread and
# switches between all of a block's threads at each syncthreads, so there blocks start at 4
# threads (a power of two, as the tree reductions need): same kernels, several times faster tests.
MIN_THREADS = 4 if SIMULATOR else 32

__all__ = ["cuda", "SIMULATOR", "MIN_THREADS", "xp_for", "device_id", "device_array", "stream", "launch",
           "host_to_device",
           "recording", "recording_into", "blocks", "row_threads"]


_MODULE_OF = {}      # array type -> its array module, for the types seen (every check asks)


def xp_for(fn, name, a):
    """The array module that owns ``a``: cupy for CuPy arrays; numpy only under the simulator.
    Anything else is a TypeError naming the function and the argument."""
    xp = _MODULE_OF.get(type(a))
    if xp is not None:
        return xp
    if type(a).__module__.startswith("cupy"):
        import cupy
        xp = cupy
    elif SIMULATOR and isinstance(a, np.ndarray):
        xp = np
    if xp is not None:
        _MODULE_OF[type(a)] = xp
        return xp
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
# dtypes the kernels take as the bits of an unsigned integer of the same size (storage.py)
_AS_BITS = {} if _bfloat16 is None else {_bfloat16: np.dtype(np.uint16)}


def device_array(a):
    """``a`` as numba sees it. CuPy arrays are wrapped without the stream synchronisation that
    CUDA Array Interface consumers do by default (that sync would cost time and is illegal while
    a CUDA graph is being captured); NumPy arrays pass through to the simulator. A bfloat16
    array becomes its uint16 view (the module docstring)."""
    if a is None or np.isscalar(a):
        return a
    bits = _AS_BITS.get(a.dtype)
    if bits is not None:
        a = a.view(bits)
    if isinstance(a, np.ndarray):
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
    return _current_stream(_STREAMS, cuda.external_stream)


def _current_stream(table, wrap):
    """``wrap(handle)`` of CuPy's current stream, cached in ``table`` by handle."""
    import cupy
    ptr = cupy.cuda.get_current_stream().ptr
    s = table.get(ptr)
    if s is None:
        if len(table) > 64:
            table.clear()
        s = table[ptr] = wrap(ptr)
    return s


_STAGED = []      # (event, pinned buffer) of host-to-device copies the GPU may not have done yet
_STAGED_LOCK = threading.Lock()


def host_to_device(host, dtype, device):
    """A NumPy array as a new C-contiguous CuPy array of ``dtype`` on GPU ``device``, copied on the
    current stream without waiting for the GPU. ``cupy.asarray`` of pageable host memory waits
    until the GPU has done all the work queued before it (the host could not run ahead of the
    GPU in a step that sends a mask or packing offsets); this copies through a pinned buffer,
    kept until an event after the copy has completed. While a graph is being captured: a plain
    copy (a captured copy would read the buffer at every replay)."""
    import cupy
    host = np.ascontiguousarray(host, dtype)
    with cupy.cuda.Device(device):
        stream = cupy.cuda.get_current_stream()
        if host.nbytes == 0 or stream.is_capturing():
            return cupy.asarray(host)
        out = cupy.empty(host.shape, host.dtype)
        pinned = cupy.cuda.alloc_pinned_memory(host.nbytes)
        np.frombuffer(pinned, np.uint8, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
        out.data.copy_from_host_async(pinned.ptr, host.nbytes, stream)
        done = cupy.cuda.Event(block=False, disable_timing=True)
        done.record(stream)
    with _STAGED_LOCK:
        _STAGED[:] = [(e, b) for e, b in _STAGED if not e.done]
        _STAGED.append((done, pinned))
    return out


def launch(kernel, grid, block, *args):
    """``kernel[grid, block, stream](*args)`` with every array converted once; after the first
    launch of a kernel with given argument kinds, through `_fast_launcher`'s function (the same
    launch with less Python). While a `Recording` is active (replay.py) the launch is recorded too."""
    if SIMULATOR:
        kernel[grid, block](*(device_array(a) for a in args))
        return
    kinds, params = _marshal(args)
    key = (kernel, device_id(args[0]), kinds)
    fast = _FAST.get(key)
    recording = _RECORDING.active
    if fast:
        if recording is not None:
            recording.kernel(fast, grid, block, kinds, params)
        fast(grid, block, params)
        return
    if recording is not None:
        recording.refuse("a kernel launched through numba's own path")
    converted = tuple(device_array(a) for a in args)
    kernel[grid, block, stream()](*converted)
    if fast is None:
        _FAST[key] = _fast_launcher(kernel, converted)


class _Recordings(threading.local):
    active = None          # the Recording (replay.py) this thread's launches go to, or None


_RECORDING = _Recordings()


def recording():
    """The active Recording of this thread, or None."""
    return _RECORDING.active


@contextlib.contextmanager
def recording_into(rec):
    """Within the block this thread's launches and GEMMs are also kept by `rec`."""
    _RECORDING.active = rec
    try:
        yield rec
    finally:
        _RECORDING.active = None


# ---- the fast path ------------------------------------------------------------------------------
# numba's launch costs 40-100 us of Python per kernel (measured on the H200's host: a BERT layer's
# ~16 launches took longer than its GPU work at small shapes), and cuda.core's launch, given the
# flat parameters, still converts each one on every call (about 80 for a row kernel of eight
# arrays). Most of it is generic work redone on every call: typing the arguments, wrapping each
# array, building ctypes values. After the first launch of a kernel with arguments of given kinds,
# the compiled kernel and its parameter layout are known, so `_fast_launcher` keeps them: the
# arguments are marshalled the way numba's `_Kernel._prepare_args` does (an array is meminfo,
# parent, size, itemsize, data pointer, shape..., strides in bytes), packed by one `struct` call
# into the kernel's parameter buffer, and launched by the driver's cuLaunchKernel with that buffer
# (CU_LAUNCH_PARAM_BUFFER_POINTER). Any kind of argument it does not know keeps numba's path.
_FAST = {}

# struct codes of the scalar parameters numba's kernels take, by numba type name; an array's flat
# parameters are all 8-byte integers
_SCALAR_CODES = {"int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
                 "int64": "q", "uint64": "Q", "float32": "f", "float64": "d", "bool": "?"}


def device_id(a):
    """The GPU a CuPy array is on (its memory's device: ``a.device`` would build a Device object
    on every call), or None for anything else (a compiled kernel belongs to one device's context)."""
    if isinstance(a, np.ndarray):       # (its .data is a memoryview, refused for ml_dtypes' bfloat16)
        return None
    return getattr(getattr(a, "data", None), "device_id", None)


_SCALARS = (bool, int, float, np.generic)


# An array argument is 5 + 2 ndim flat parameters (numba's array struct), its data pointer the 5th.
_DATA = 4


def array_params(ndim):
    """How many flat parameters an array of `ndim` dimensions takes."""
    return 5 + 2 * ndim


def data_positions(kinds):
    """The positions of the arrays' data pointers in the flat params of arguments of `kinds`
    (`_marshal`)."""
    positions, at = [], 0
    for kind in kinds:
        if isinstance(kind, tuple):             # an array: (dtype, ndim[, F])
            positions.append(at + _DATA)
            at += array_params(kind[1])
        else:
            at += 1
    return positions


def _marshal(args):
    """(kinds, params) in one pass over the arguments. kinds: what decides the compiled overload,
    an array's dtype, ndim and layout (C, or else whether F), a scalar's type (not ``hasattr(a,
    "__cuda_array_interface__")``: that builds CuPy's interface dict, ~3 us). params: the flat
    values numba's `_Kernel._prepare_args` passes (an array is meminfo, parent, size, itemsize,
    data pointer, shape..., strides in bytes; a scalar itself, packed by the launcher)."""
    kinds, params = [], []
    for a in args:
        strides = None if isinstance(a, _SCALARS) else getattr(a, "strides", None)
        if strides is None:
            kinds.append(type(a))
            params.append(a)
            continue
        shape, item = a.shape, a.itemsize
        c_strides = _C_STRIDES.get((shape, item)) or _c_strides(shape, item)
        # C-contiguous by its strides (no flags object built), or by its flags where they differ
        # (CuPy may report any stride for a dimension of size 0 or 1). numba types a C-contiguous
        # array 'C' whatever its F flag, so the F flag is part of the kind only when it is not C.
        if strides == c_strides or a.flags.c_contiguous:
            kinds.append((a.dtype, len(shape)))
            strides = c_strides
        else:
            kinds.append((a.dtype, len(shape), a.flags.f_contiguous))
        params += (0, 0, a.size, item, a.data.ptr, *shape, *strides)
    return tuple(kinds), params


def parameter_codes(argtypes):
    """The `struct` codes of the flat parameters of a kernel compiled for numba types `argtypes`
    (one code per parameter), or None where an argument is of a type the fast path does not pack."""
    types = _numba_types()
    codes = []
    for ty in argtypes:
        if isinstance(ty, types.Array):
            codes.append("q" * array_params(ty.ndim))
        elif isinstance(ty, (types.Integer, types.Float, types.Boolean)) and str(ty) in _SCALAR_CODES:
            codes.append(_SCALAR_CODES[str(ty)])
        else:
            return None
    return "".join(codes)


def _numba_types():
    """The module of the types numba's CUDA kernels are typed with: numba-cuda's own where it has
    one (numba.cuda.types), else numba's."""
    from numba.cuda import types
    if not hasattr(types, "Array"):
        from numba.core import types
    return types


def _fast_launcher(kernel, converted):
    """A `_Launcher` of the overload that `converted` selected, or False."""
    launch_kernel = _driver_launch()
    try:
        argtypes = tuple(kernel.typeof_pyval(a) for a in converted)
        compiled = kernel.overloads[argtypes]
        handle = int(compiled._codelibrary.get_cufunc().kernel._handle)
    except Exception:                # an internal that moved: numba's own launch stays
        return False
    if getattr(compiled, "extensions", None) or getattr(compiled, "debug", False) or getattr(compiled, "cooperative", False):
        return False
    codes = parameter_codes(argtypes)
    if launch_kernel is None or not handle or codes is None:
        return False
    return _Launcher(launch_kernel, handle, codes)


class ParameterLayout:
    """Where each flat parameter of a kernel sits in its parameter buffer: the kernel's parameters
    in order, each at its natural alignment, as a C struct of them lays out (what cuLaunchKernel
    reads from CU_LAUNCH_PARAM_BUFFER_POINTER). `codes` holds one `struct` code per parameter."""
    __slots__ = ("struct", "offsets")

    def __init__(self, codes):
        self.struct = struct.Struct("@" + codes)
        self.offsets = tuple(struct.calcsize("@" + codes[:i + 1]) - struct.calcsize(c) for i, c in enumerate(codes))

    def buffer(self):
        """(a parameter buffer, its size, the `extra` argument of cuLaunchKernel naming both)."""
        data = ctypes.create_string_buffer(max(1, self.struct.size))
        size = ctypes.c_size_t(self.struct.size)
        extra = (ctypes.c_void_p * 5)(_BUFFER_POINTER, ctypes.addressof(data), _BUFFER_SIZE,
                                      ctypes.addressof(size), _PARAMS_END)
        return data, size, extra


# cuLaunchKernel's `extra` keys (cuda.h)
_PARAMS_END, _BUFFER_POINTER, _BUFFER_SIZE = 0, 1, 2


class _Launcher:
    """One compiled kernel's launch from the flat parameter list `_marshal` builds, packed into
    its parameter buffer and launched through the driver; `prepared` makes a `PreparedLaunch` of
    one list (what a recording keeps: replay.py). One buffer a launcher, held under its lock
    while packed and launched (cuLaunchKernel copies the parameters before it returns)."""
    __slots__ = ("launch_kernel", "handle", "layout", "buffer", "lock")

    def __init__(self, launch_kernel, handle, codes):
        self.launch_kernel, self.handle, self.layout = launch_kernel, handle, ParameterLayout(codes)
        self.buffer = self.layout.buffer()
        self.lock = threading.Lock()

    def __call__(self, grid, block, params):
        data, _, extra = self.buffer
        with self.lock:
            self.layout.struct.pack_into(data, 0, *params)
            _run(self.launch_kernel, self.handle, _dims(grid, block), extra)

    def prepared(self, grid, block, params):
        """A PreparedLaunch of these params."""
        return PreparedLaunch(self, grid, block, params)


class PreparedLaunch:
    """A kernel launch with its parameters packed once into its own buffer; `run(pointers)` writes
    the given (position, address) parameters first. Not reentrant: one thread at a time
    (replay.py holds a plan's lock)."""
    __slots__ = ("launch_kernel", "handle", "dims", "offsets", "buffer")

    def __init__(self, launcher, grid, block, params):
        self.launch_kernel, self.handle, self.dims = launcher.launch_kernel, launcher.handle, _dims(grid, block)
        self.offsets = launcher.layout.offsets
        self.buffer = launcher.layout.buffer()
        launcher.layout.struct.pack_into(self.buffer[0], 0, *params)

    def run(self, pointers=()):
        data, _, extra = self.buffer
        for i, address in pointers:
            _POINTER.pack_into(data, self.offsets[i], address)
        _run(self.launch_kernel, self.handle, self.dims, extra)


_POINTER = struct.Struct("@q")      # an address written into a prepared buffer


def _run(launch_kernel, handle, dims, extra):
    """cuLaunchKernel of `handle` with grid and block `dims` (six ints) and the parameter buffer
    named by `extra`, on CuPy's current stream."""
    import cupy
    gx, gy, gz, bx, by, bz = dims
    status = launch_kernel(handle, gx, gy, gz, bx, by, bz, 0, cupy.cuda.get_current_stream().ptr, None, extra)
    if status != 0:
        raise RuntimeError(f"cuLaunchKernel failed: {_error_name(status)} (grid {dims[:3]}, block {dims[3:]})")


def _error_name(status):
    name = ctypes.c_char_p()
    try:
        ctypes.CDLL("libcuda.so.1").cuGetErrorName(status, ctypes.byref(name))
    except (OSError, AttributeError):
        pass
    return f"{name.value.decode() if name.value else 'CUDA error'} ({status})"


_DIMS = {}


def _dims(grid, block):
    """(grid, block), each an int or a tuple of up to three, as six ints (cached)."""
    found = _DIMS.get((grid, block))
    if found is None:
        def three(n):
            n = (n,) if isinstance(n, int) else tuple(n)
            return tuple(int(v) for v in n) + (1,) * (3 - len(n))
        if len(_DIMS) > 4096:          # grids follow the shapes: keep the table bounded
            _DIMS.clear()
        found = _DIMS[(grid, block)] = three(grid) + three(block)
    return found


def _driver_launch():
    """The driver's cuLaunchKernel through ctypes (libcuda is loaded by every CUDA process), or None.
    Called with the GIL held (`ctypes.PyDLL`), as torch's launches are: a launch only queues work,
    and releasing and taking back the GIL around each one costs more than the launch gains."""
    if "launch" not in _DRIVER:
        try:
            fn = ctypes.PyDLL("libcuda.so.1").cuLaunchKernel
            fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _DRIVER["launch"] = fn
    return _DRIVER["launch"]


_DRIVER = {}


_C_STRIDES = {}


def _c_strides(shape, itemsize):
    """C-order byte strides of `shape`, as numba computes them for a C-contiguous array (CuPy may
    report any stride for a dimension of size 0 or 1)."""
    key = (shape, itemsize)
    found = _C_STRIDES.get(key)
    if found is None:
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.append(step)
            step *= n
        found = tuple(reversed(strides))
        if len(_C_STRIDES) > 4096:
            _C_STRIDES.clear()
        _C_STRIDES[key] = found
    return found


def row_threads(width):
    """Threads per block along a row of ``width`` items: a power of two in [MIN_THREADS, 256]."""
    t = MIN_THREADS
    while t < width and t < 256:
        t *= 2
    return t


def blocks(n, threads):
    """Blocks of ``threads`` threads that cover ``n`` items (at least one)."""
    return max(1, -(-int(n) // threads))
