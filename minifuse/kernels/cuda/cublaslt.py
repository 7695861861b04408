"""GEMMs through cuBLASLt: algorithms timed once per shape, the bias in the GEMM's epilogue, and
calls that a CUDA graph can capture.

Why not ``cupy.matmul`` (cuBLAS) for everything:
- CuPy refuses any cuBLAS call while a stream is being captured into a CUDA graph (cuBLAS would
  need a workspace of its own). cuBLASLt takes the workspace as an argument: this module owns
  one, so every GEMM here can be captured, and a whole layer can be replayed as one graph.
- cuBLASLt's heuristic offers several algorithms; timing the first CANDIDATES on the real arrays
  and keeping the fastest gave 0.394 ms for the 4096 x 768 -> 3072 float32 GEMM against CuPy's
  0.401 ms (H100, BENCHMARKS.md).
- The epilogue can add the bias while the tile is in registers (``CUBLASLT_EPILOGUE_BIAS``),
  one pass less for a bias-only linear. cuBLASLt also has RELU_BIAS and GELU_BIAS (the tanh
  GELU, minifuse's 'gelu_tanh'). In float32 GELU_BIAS is slower than the plain GEMM followed by
  minifuse's bias + GELU kernel (the activation runs in the GEMM's tail at low occupancy); in
  float16 the GEMM is four times shorter and the separate pass over its output costs as much as
  the GEMM itself, so there 'relu' and 'gelu_tanh' ride in the epilogue (`EPILOGUE_ACTIVATIONS`;
  BENCHMARKS.md); bfloat16 takes the same epilogues (its GEMMs run on the tensor cores at
  float16's rate; not timed separately). The exact (erf) GELU and the other activations stay in
  minifuse's kernels.

dtypes: float32 (float32 products, or TF32 on request), float16 and bfloat16 (tensor cores); all
accumulate in float32 (CUBLAS_COMPUTE_32F, float32 alpha and beta) and store in the arrays' dtype.

CuPy binds cuBLAS but not cuBLASLt, so this module calls the C API through ctypes: the library
is already loaded by CuPy's cuBLAS (libcublas links it), found by name or in /proc/self/maps.
Descriptors and the chosen algorithm are cached per shape; each call launches on CuPy's current
stream, so calls queue with the rest and join a capture.

Row-major trick: cuBLASLt is column-major, and a row-major (R, C) array is a column-major (C, R)
one. For out = op(a) @ op(b) with row-major a, b, out (op: the array itself, or its transpose for
``trans_a`` / ``trans_b``), compute out^T = op(b)^T op(a)^T column-major: A = b (transposed for
``trans_b``), B = a (transposed for ``trans_a``). The bias then runs along D's rows, one value per
output feature. A transposed operand is read in place: the weight gradient x^T dz of a linear
layer needs no copy of dz^T.
"""
import ctypes
import ctypes.util

import numpy as np

from ...dtypes import bfloat16
from .runtime import recording as _recording

# cuBLASLt / CUDA enum values (cublasLt.h, library_types.h): CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF.
_CUDA_R = {np.dtype(np.float32): 0, np.dtype(np.float16): 2, **({} if bfloat16 is None else {bfloat16: 14})}
_COMPUTE_32F = 68                      # CUBLAS_COMPUTE_32F: no TF32, like torch with allow_tf32=False
_COMPUTE_32F_FAST_TF32 = 77            # float32 in and out, TF32 products on the tensor cores
_OP_N, _OP_T = 0, 1
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
_LAYOUT_BATCH_COUNT, _LAYOUT_STRIDED_BATCH_OFFSET = 5, 6
_PREF_MAX_WORKSPACE_BYTES = 1
_EPILOGUE_DEFAULT, _EPILOGUE_BIAS = 1, 4
# activation -> (epilogue without bias, with bias): CUBLASLT_EPILOGUE_RELU(_BIAS), _GELU(_BIAS)
_EPILOGUES = {"relu": (2, 6), "gelu_tanh": (32, 36)}
# the dtypes whose GEMMs take their activation in the epilogue (see the module docstring)
EPILOGUE_ACTIVATIONS = {d: frozenset(_EPILOGUES) for d in _CUDA_R if d.itemsize == 2}
WORKSPACE_BYTES = 32 * 2 ** 20
CANDIDATES = 8           # algorithms asked from the heuristic, each timed once per shape


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspaceSize", ctypes.c_size_t), ("state", ctypes.c_int),
                ("wavesCount", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _load():
    """The loaded libcublasLt (after CuPy's cuBLAS), or None."""
    import cupy
    cupy.cuda.device.get_cublas_handle()            # loads libcublas and with it libcublasLt
    names = ["libcublasLt.so.13", "libcublasLt.so.12", ctypes.util.find_library("cublasLt")]
    try:
        with open("/proc/self/maps") as f:
            names += sorted({line.split()[-1] for line in f if "libcublasLt.so" in line})
    except OSError:
        pass
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _capturing():
    return _current_stream().is_capturing()


def _current_stream():
    """CuPy's current stream (imported here: this module imports without CuPy)."""
    import cupy
    return cupy.cuda.get_current_stream()


def _time(launch, repeat=3):
    """Milliseconds of ``launch()`` on the current stream, best of ``repeat`` after a warm-up;
    infinite when cuBLASLt refuses the candidate at launch."""
    import cupy
    try:
        launch()
        best = float("inf")
        for _ in range(repeat):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            launch()
            end.record()
            end.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, end))
        return best
    except RuntimeError:
        return float("inf")


class _CublasLt:
    def __init__(self, lib):
        self.lib = lib
        P, p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        for name, args in {
                "cublasLtCreate": [p],
                "cublasLtMatmulDescCreate": [p, ctypes.c_int, ctypes.c_int],
                "cublasLtMatmulDescSetAttribute": [P, ctypes.c_int, P, ctypes.c_size_t],
                "cublasLtMatrixLayoutCreate": [p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64],
                "cublasLtMatrixLayoutSetAttribute": [P, ctypes.c_int, P, ctypes.c_size_t],
                "cublasLtMatmulPreferenceCreate": [p],
                "cublasLtMatmulPreferenceSetAttribute": [P, ctypes.c_int, P, ctypes.c_size_t],
                "cublasLtMatmulAlgoGetHeuristic": [P, P, P, P, P, P, P, ctypes.c_int,
                                                   ctypes.POINTER(_HeuristicResult), ctypes.POINTER(ctypes.c_int)],
                "cublasLtMatmul": [P, P, P, P, P, P, P, P, P, P, P, P, P, P, ctypes.c_size_t, P]}.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        self.handle = self._new("cublasLtCreate")
        self.plans = {}
        self.workspace = None
        self.one, self.zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
        # for the per-call path: the bound function and the constant arguments made once
        self._matmul = lib.cublasLtMatmul
        self._one_ref, self._zero_ref = ctypes.byref(self.one), ctypes.byref(self.zero)

    def _call(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"cuBLASLt: {name} failed with status {status}")

    def _new(self, name, *args):
        h = ctypes.c_void_p()
        self._call(name, ctypes.byref(h), *args)
        return h

    def _set(self, setter, obj, attr, value):
        self._call(setter, obj, attr, ctypes.byref(value), ctypes.sizeof(value))

    def _layout(self, dtype, rows, cols, batch):
        """A column-major (rows, cols) matrix, ``batch`` of them one after another."""
        layout = self._new("cublasLtMatrixLayoutCreate", _CUDA_R[dtype], rows, cols, rows)
        if batch > 1:
            self._set("cublasLtMatrixLayoutSetAttribute", layout, _LAYOUT_BATCH_COUNT, ctypes.c_int32(batch))
            self._set("cublasLtMatrixLayoutSetAttribute", layout, _LAYOUT_STRIDED_BATCH_OFFSET,
                      ctypes.c_int64(rows * cols))
        return layout

    def plan(self, key, run):
        """(descriptor, A/B/D layouts, algorithm) for ``key`` = (batch, n, k, m, trans_a, trans_b,
        dtype, out dtype, epilogue, compute type), cached. ``run(plan)`` launches with a plan: the heuristic's first CANDIDATES
        algorithms are each timed on the real arrays and the fastest is kept. While a CUDA graph is
        being captured nothing may be timed: the heuristic's first choice is used."""
        found = self.plans.get(key)
        if found is not None:
            return found
        batch, n, k, m, trans_a, trans_b, dtype, out_dtype, epilogue, compute = key
        desc = self._new("cublasLtMatmulDescCreate", compute, 0)          # scale type float32
        self._set("cublasLtMatmulDescSetAttribute", desc, _DESC_TRANSA, ctypes.c_int32(_OP_T if trans_b else _OP_N))
        self._set("cublasLtMatmulDescSetAttribute", desc, _DESC_TRANSB, ctypes.c_int32(_OP_T if trans_a else _OP_N))
        self._set("cublasLtMatmulDescSetAttribute", desc, _DESC_EPILOGUE, ctypes.c_uint32(epilogue))
        # b: row-major (m, k) if trans_b else (k, m); a: row-major (k, n) if trans_a else (n, k);
        # out: row-major (n, m)
        a = self._layout(dtype, k, m, batch) if trans_b else self._layout(dtype, m, k, batch)
        b = self._layout(dtype, n, k, batch) if trans_a else self._layout(dtype, k, n, batch)
        d = self._layout(out_dtype, m, n, batch)
        pref = self._new("cublasLtMatmulPreferenceCreate")
        self._set("cublasLtMatmulPreferenceSetAttribute", pref, _PREF_MAX_WORKSPACE_BYTES,
                  ctypes.c_uint64(WORKSPACE_BYTES))
        results, count = (_HeuristicResult * CANDIDATES)(), ctypes.c_int(0)
        self._call("cublasLtMatmulAlgoGetHeuristic", self.handle, desc, a, b, d, d, pref, CANDIDATES,
                   results, ctypes.byref(count))
        if count.value < 1:
            raise RuntimeError(f"cuBLASLt: no algorithm for {key}")
        bias_set = [None]                 # the bias pointer last set on desc, shared by the candidates
        plans = [(desc, a, b, d, results[i], ctypes.byref(results[i].algo), bias_set) for i in range(count.value)]
        if _recording() is not None:     # a shape first seen while recording: its timing runs would be kept
            _recording().refuse("a cuBLASLt algorithm chosen")
        if len(plans) > 1 and not _capturing():
            plans.sort(key=lambda p: _time(lambda: run(p)))
        self.plans[key] = plans[0]
        return plans[0]

    def matmul(self, a, b, out, trans_b, bias=None, epilogue=None, compute=_COMPUTE_32F, trans_a=False):
        """out = op(a) @ op(b) (+ bias per output column), op the transpose for ``trans_a`` /
        ``trans_b``; (batch, rows, cols) or 2-D C-contiguous arrays of one dtype. ``epilogue``: a
        cuBLASLt epilogue other than the default / bias one (or any other cuBLASLt epilogue value).
        ``compute``: _COMPUTE_32F_FAST_TF32 lets float32 products run on the tensor cores as TF32.
        ``out`` may be float32 for float16 / bfloat16 a and b: the float32 sums are then stored
        without the rounding to half precision (a weight gradient for float32 master weights)."""
        if self.workspace is None:
            import cupy
            self.workspace = cupy.empty(WORKSPACE_BYTES, cupy.uint8)
        shape = a.shape
        batch = shape[0] if len(shape) == 3 else 1
        k, n = shape[-2:]
        if not trans_a:
            n, k = k, n
        if epilogue is None:
            epilogue = _EPILOGUE_DEFAULT if bias is None else _EPILOGUE_BIAS
        key = (batch, n, k, out.shape[-1], trans_a, trans_b, a.dtype, out.dtype, epilogue, compute)
        pointers = (a.data.ptr, b.data.ptr, out.data.ptr, None if bias is None else bias.data.ptr)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plan(key, lambda p: self._run(p, *pointers))
        self._run(plan, *pointers)
        return out

    def _run(self, plan, a, b, out, bias):
        """One cublasLtMatmul of `plan` on CuPy's current stream, a, b, out, bias the device
        addresses (bias None or 0: none). Python ints for the pointers (ctypes converts them for
        c_void_p), everything else made once per plan: the ctypes objects made per call cost
        more than the call itself. While a Recording is active (replay.py) the call is recorded."""
        recording = _recording()
        if recording is not None:
            recording.step(lambda v: self._run(plan, *v), [a, b, out, bias], (0, 1, 2, 3))
        desc, la, lb, ld, _, algo, bias_set = plan
        if bias and bias_set[0] != bias:
            # (read when cublasLtMatmul is called, so setting it only when it changes is exact,
            # also for a call captured into a CUDA graph)
            self._set("cublasLtMatmulDescSetAttribute", desc, _DESC_BIAS_POINTER, ctypes.c_void_p(bias))
            bias_set[0] = bias
        status = self._matmul(self.handle, desc, self._one_ref, b, la, a, lb, self._zero_ref,
                              out, ld, out, ld, algo, self.workspace.data.ptr, WORKSPACE_BYTES,
                              _current_stream().ptr)
        if status != 0:
            raise RuntimeError(f"cuBLASLt: cublasLtMatmul failed with status {status}")


_STATE = {}


def _instance():
    """The process's cuBLASLt wrapper, or None where the library cannot be loaded."""
    if "lt" not in _STATE:
        lib = None
        try:
            lib = _load()
        except Exception:                   # no CuPy / no GPU: the callers fall back to cuBLAS
            lib = None
        _STATE["lt"] = _CublasLt(lib) if lib is not None else None
    return _STATE["lt"]


def _usable(arrays, out=None):
    """float32/float16/bfloat16, C-contiguous, non-empty, 256-byte aligned (the heuristic assumes CuPy's
    allocation alignment; a sliced view may not have it), one dtype; None entries ignored. ``out``
    (checked the same way) may also be float32 where the others are half precision."""
    arrays = [a for a in arrays if a is not None] + ([] if out is None else [out])
    if not arrays or arrays[0].dtype not in _CUDA_R:
        return False
    dt = arrays[0].dtype
    for a in arrays:
        if not a.size or a.data.ptr % 256 or not a.flags.c_contiguous:
            return False
        if a.dtype != dt and not (a is out and dt.itemsize == 2 and a.dtype == np.float32):
            return False
    return True


def applies(*arrays, out=None):
    """True where `linear` / `bmm` would run these arrays (None entries ignored) into ``out`` (of
    their dtype, or float32 for half-precision arrays) in cuBLASLt."""
    return _usable(arrays, out) and _instance() is not None


def takes_activation(dtype, activation):
    """True where `linear` applies ``activation`` in the GEMM's epilogue for this dtype."""
    return activation in EPILOGUE_ACTIVATIONS.get(dtype, ())


def linear(x2, w, bias, out2, tf32=False, activation="none"):
    """out2 = act(x2 @ w.T (+ bias)) in one cuBLASLt call: x2 (N, K), w (M, K), bias (M,) or
    None, out2 (N, M); ``tf32``: float32 products as TF32 on the tensor cores; ``activation``
    'none' or one that `takes_activation`. Returns False (nothing done) where cuBLASLt does not
    apply, for the caller's cuBLAS path."""
    if not applies(x2, w, bias, out2):
        return False
    compute = _COMPUTE_32F_FAST_TF32 if tf32 and x2.dtype == np.float32 else _COMPUTE_32F
    epilogue = None if activation == "none" else _EPILOGUES[activation][bias is not None]
    _instance().matmul(x2, w, out2, trans_b=True, bias=bias, epilogue=epilogue, compute=compute)
    return True


def bmm(a, b, out, trans_a=False, trans_b=False, tf32=False):
    """out[i] = op(a[i]) @ op(b[i]), op the transpose for ``trans_a`` / ``trans_b``, for C-contiguous
    (batch, ., .) arrays; ``tf32``: float32 products as TF32 on the tensor cores. Returns False
    (nothing done) where cuBLASLt does not apply. ``out`` float32 for half a and b: the float32
    sums stored as they are."""
    if not applies(a, b, out=out):
        return False
    compute = _COMPUTE_32F_FAST_TF32 if tf32 and a.dtype == np.float32 else _COMPUTE_32F
    _instance().matmul(a, b, out, trans_b=trans_b, trans_a=trans_a, compute=compute)
    return True
