"""The kernel backends that the backend-neutral kernel tests (tests/kernels) run on, one object
each, and the helpers that let one test body run on every backend (a plain module, imported as
``from backends import ...``: tests/conftest.py owns the name conftest; its ``backend`` fixture is
parametrized over `PARAMS`).

- 'cpu': always (`minifuse.kernels.cpu`, NumPy arrays).
- 'cuda': under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1: NumPy arrays, and every
  simulated block costs tens to hundreds of milliseconds, so tests shrink their shapes and example
  counts on it: `Backend.simulated`, `Backend.pick`, `Backend.examples`), or on a GPU with CuPy
  (`mf.cuda_available()`: CuPy arrays, float16 tested too). bfloat16 (with ml_dtypes) is tested
  on both: its kernels convert bits themselves, the same code under the simulator as on the GPU.
  Elsewhere its tests are skipped.

Inputs are made on the host with NumPy (tests/kernels/reference.py) and moved with `to_dev`,
which keeps a strided view strided (the kernels must be tested on the layouts they are given);
results come back with `to_host`.
"""
import contextlib
import inspect
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import minifuse as mf
from minifuse.kernels import registry

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
GPU = not SIMULATOR and mf.cuda_available()

# Examples of a hypothesis test on the simulator (each costs up to a few simulated seconds).
SIMULATED_EXAMPLES = 5

# The kernels' own tolerances, relative to the result's scale (reference.assert_close). float16
# computes in float32 but stores 11-bit mantissas: 1e-3 of the result's scale. bfloat16 stores
# 8-bit mantissas: float16's tolerances times 8 (2^-8 against 2^-11 for half an ulp).
RTOL = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
# Whole layers (several roundings of intermediate results in the arrays' dtype).
LAYER_RTOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
if mf.bfloat16 is not None:
    RTOL[mf.bfloat16], LAYER_RTOL[mf.bfloat16] = 8 * RTOL[np.dtype(np.float16)], 8 * LAYER_RTOL[np.dtype(np.float16)]
HALF = tuple(d for d in (np.dtype(np.float16), mf.bfloat16) if d is not None)


class Backend:
    """One kernel backend as the tests see it.

    name: the registry's name ('cpu', 'cuda'); K: its kernel package; xp: its array module;
    dtypes: what the tests run it on (a subset of K.DTYPES); simulated: the CUDA simulator (tiny
    shapes, few examples); gpu: its arrays live on a GPU (CuPy); available / reason: whether it
    runs here, and why not.
    """

    def __init__(self, name, dtypes, available, reason="", simulated=False, gpu=False):
        self.name = name
        self.dtypes = tuple(np.dtype(d) for d in dtypes)
        self.available, self.reason = available, reason
        self.simulated, self.gpu = simulated, gpu

    def __repr__(self):
        return f"<backend {self.name}{' (simulated)' if self.simulated else ''}>"

    @property
    def K(self):
        return registry.get(self.name).kernels

    @property
    def xp(self):
        return self.K.xp

    def rtol(self, dtype):
        return RTOL[np.dtype(dtype)]

    def layer_rtol(self, dtype):
        return LAYER_RTOL[np.dtype(dtype)]

    def layer_norm_rtol(self, dtype, v, rtol=None):
        """The LayerNorm tolerance for rows `v` (x + residual): `rtol` (default `self.rtol`) plus,
        on CUDA, what its statistics in the compute dtype cost. The CPU keeps a row's mean in
        float64; CUDA in float32 for float16 / float32 arrays (as PyTorch and cuDNN do), so there
        v - mean is off by up to an ulp of the mean, times rstd: rows whose mean is far from zero
        against their spread lose that much relative accuracy."""
        rtol = self.rtol(dtype) if rtol is None else rtol
        v = np.asarray(v, np.float64)
        if self.name == "cpu" or v.size == 0:
            return rtol
        eps = np.finfo(self.compute_dtype(dtype)).eps
        return rtol + float(np.max(eps * np.abs(v.mean(-1)) / (v.std(-1) + 1e-30)))

    def compute_dtype(self, dtype):
        """The dtype the kernels compute in for arrays of `dtype`: CUDA computes float16 and
        bfloat16 in float32 (a residual add too, where the unfused path rounds x + residual to
        the half dtype)."""
        dtype = np.dtype(dtype)
        return np.dtype(np.float32) if self.name == "cuda" and dtype in HALF else dtype

    def stats_dtype(self, dtype):
        """The dtype of the row statistics (LayerNorm's rstd, softmax's row max and sum) that the
        fused training functions keep for inputs of `dtype`: float32 for the half dtypes."""
        dtype = np.dtype(dtype)
        return np.dtype(np.float32) if dtype in HALF else dtype

    def pick(self, full, small):
        """`small` on the simulator, else `full` (shapes, lists of sizes)."""
        return small if self.simulated else full

    def examples(self, n):
        """A hypothesis test's example count: `n`, or `SIMULATED_EXAMPLES` on the simulator."""
        return min(n, SIMULATED_EXAMPLES) if self.simulated else n

    # ---- arrays --------------------------------------------------------------------------------

    def to_dev(self, a):
        """A host array as this backend's kernels take it (None stays None). On a GPU the copy
        keeps a's layout: a strided or transposed view of a C-contiguous host array becomes the
        same view of that array's copy on the device."""
        if a is None or not self.gpu or not isinstance(a, np.ndarray):
            return a
        import cupy
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        if a.flags.c_contiguous or base is a or not base.flags.c_contiguous:
            return cupy.array(a, order="K")
        offset = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        dev = cupy.asarray(base)
        return cupy.ndarray(a.shape, a.dtype, memptr=dev.data + offset, strides=a.strides)

    def to_host(self, a):
        if a is None or isinstance(a, np.ndarray):
            return a
        return a.get()


CPU = Backend("cpu", (np.float32, np.float64), available=True)
CUDA = Backend("cuda", (np.float32, np.float64) + ((np.float16,) if GPU else ())
               + ((mf.bfloat16,) if mf.bfloat16 is not None else ()),
               available=SIMULATOR or GPU, reason="needs NUMBA_ENABLE_CUDASIM=1 or an NVIDIA GPU with CuPy",
               simulated=SIMULATOR, gpu=GPU)
BACKENDS = (CPU, CUDA)
AVAILABLE = tuple(b for b in BACKENDS if b.available)
# The `backend` fixture's parameters: every backend, the unavailable ones skipped with the reason.
PARAMS = [pytest.param(b, id=b.name, marks=() if b.available else pytest.mark.skip(reason=b.reason))
          for b in BACKENDS]


# ---- hypothesis on every backend ------------------------------------------------------------------

def dtypes(backend):
    """The strategy of the dtypes a backend is tested on (as scalar types: np.float32, ...)."""
    return st.sampled_from([d.type for d in backend.dtypes])


def choice(full, small=None):
    """A strategy maker: sampled from `full`, or from `small` on the simulator."""
    return lambda backend: st.sampled_from(full if small is None else backend.pick(full, small))


def parametrize_dtypes(metafunc):
    """For a `pytest_generate_tests(tryfirst=True)`: a test that takes both `backend` and `dtype`
    runs on every backend with each of ITS dtypes (ids 'cpu-float32', ..., 'cuda-float16' on a
    GPU); an unavailable backend appears once, skipped. Added as a parametrize mark, which
    overrides the `backend` fixture's own parameters (as a direct parametrization does)."""
    if not {"backend", "dtype"} <= set(metafunc.fixturenames):
        return
    if any("backend" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return
    params = []
    for b in BACKENDS:
        if b.available:
            params += [pytest.param(b, d.type, id=f"{b.name}-{d.name}") for d in b.dtypes]
        else:
            params.append(pytest.param(b, np.float32, id=b.name, marks=pytest.mark.skip(reason=b.reason)))
    metafunc.definition.add_marker(pytest.mark.parametrize("backend, dtype", params))


def given_backend(examples=25, **strategies):
    """Turn ``body(backend, **drawn)`` into a test taking the `backend` fixture that runs hypothesis
    with `examples` examples (a few on the simulator, `Backend.examples`).

    hypothesis's settings are fixed when a test is decorated, before any fixture exists, so the
    test builds its inner hypothesis test per call: each value of `strategies` is a strategy or a
    function of the backend returning one (`dtypes`, `choice`), for shapes that depend on it.
    """
    def decorate(body):
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in list(inspect.signature(body).parameters.values())[1:]]

        def test(backend):
            drawn = {k: v if isinstance(v, SearchStrategy) else v(backend) for k, v in strategies.items()}

            def run(**kw):
                body(backend, **kw)
            run.__signature__ = inspect.Signature(params)   # what `given` matches its keywords to
            run.__name__, run.__qualname__, run.__module__ = body.__name__, body.__qualname__, body.__module__
            # one example-database key per test and backend (the source of `run` is the same for all)
            run._hypothesis_internal_add_digest = f"{body.__module__}.{body.__qualname__}[{backend.name}]".encode()
            settings(max_examples=backend.examples(examples), deadline=None)(given(**drawn)(run))()

        test.__name__, test.__qualname__, test.__module__ = body.__name__, body.__qualname__, body.__module__
        test.__doc__ = body.__doc__
        return test
    return decorate


@contextlib.contextmanager
def quiet():
    """Within: NumPy's overflow / invalid warnings are silent. The simulator evaluates math.exp on
    NumPy scalars, which warn where a GPU returns inf; the references compute inf - inf."""
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


__all__ = ["SIMULATOR", "GPU", "Backend", "CPU", "CUDA", "BACKENDS", "AVAILABLE", "PARAMS", "RTOL", "HALF",
           "LAYER_RTOL", "dtypes", "choice", "given_backend", "parametrize_dtypes", "quiet"]
