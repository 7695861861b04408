"""The backend registry: which kernel package runs the fused ops for an array, decided here only.

A backend is one package exporting `ENTRY_POINTS` (the same names and signatures in every
backend: activations by name, biases and optional outputs as None) and declaring the dtypes its
kernels take (`DTYPES`), its array module (`xp`) and its argument checks (`CHECKS`). Layers
(`minifuse.nn`), the fused training functions (`minifuse.fusions`) and the graph executor
(`minifuse.graph`) all ask `for_array` (or `get` by name); nothing else picks a kernel package.

Adding a backend: its package, and one `register` line below. Packages are imported on first
use: CPU work never imports numba-cuda or CuPy.

Under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the CUDA package takes NumPy arrays;
NumPy arrays still map to the CPU backend, and the CUDA one is reached by name (`get("cuda")`),
or for a block of code by `route("numpy", "cuda")`: how the tests and ``mf.compile(...,
backend="cuda")`` run it without a GPU.
"""
import contextlib
import importlib

__all__ = ["ENTRY_POINTS", "Backend", "register", "get", "for_array", "names", "available", "route"]

# Every backend package exports these, with the CPU package's signatures (tests check both).
ENTRY_POINTS = (
    # checked entry points: arrays in, arrays out, every argument validated first
    "bias_act_", "bias_glu", "linear_act", "mlp", "residual_layer_norm", "attention", "attention_packed",
    "transformer_layer", "pack", "unpack", "attention_varlen", "transformer_layer_varlen",
    # primitives on checked arguments: the compositions (kernels/compose.py) and minifuse.fusions
    "linear", "bmm", "apply_bias_act", "apply_bias_glu", "apply_residual_layer_norm", "attend_packed", "mask_add",
    "pack_offsets", "gather_rows", "scatter_rows", "attend_varlen", "to_device", "to_heads", "from_heads",
    # the backward halves of fused training
    "bias_act_backward", "glu_backward", "residual_layer_norm_backward", "softmax_forward", "softmax_backward",
)


class Backend:
    """A registered kernel package: `name`, the package's import path, the array module whose
    arrays it takes (its top-level name, e.g. 'cupy'). `kernels` imports the package (None when
    it cannot be imported here, e.g. no numba-cuda)."""

    def __init__(self, name, package, array_module):
        self.name, self.package, self.array_module = name, package, array_module
        self._kernels = None
        self._error = None

    @property
    def kernels(self):
        if self._kernels is None and self._error is None:
            try:
                self._kernels = importlib.import_module(self.package)
            except ImportError as e:            # a missing optional dependency
                self._error = e
        return self._kernels

    @property
    def dtypes(self):
        """The dtypes its kernels take (empty when the package cannot be imported)."""
        k = self.kernels
        return () if k is None else k.DTYPES

    def __repr__(self):
        return f"Backend({self.name!r}, {self.package!r}, arrays of {self.array_module})"


_BY_NAME = {}
_BY_MODULE = {}


def register(name, package, array_module):
    """Make `package` the backend called `name` for arrays of `array_module` ('numpy', 'cupy')."""
    backend = Backend(name, package, array_module)
    _BY_NAME[name] = backend
    _BY_MODULE[array_module] = backend
    return backend


def get(name):
    """The backend called `name` ('cpu', 'cuda')."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown kernel backend {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def for_array(a):
    """The backend for arrays like `a` (by the module that owns its type), or None."""
    return _BY_MODULE.get(type(a).__module__.partition(".")[0])


@contextlib.contextmanager
def route(array_module, name):
    """Within the block, arrays of `array_module` ('numpy') go to the backend `name`: how the tests
    run the CUDA kernels on NumPy arrays under the simulator, through the same layers and fused
    functions as on a GPU."""
    old = _BY_MODULE.get(array_module)
    _BY_MODULE[array_module] = get(name)
    try:
        yield
    finally:
        if old is None:
            del _BY_MODULE[array_module]
        else:
            _BY_MODULE[array_module] = old


def names():
    return tuple(_BY_NAME)


def available():
    """The names of the backends whose packages import here."""
    return tuple(n for n, b in _BY_NAME.items() if b.kernels is not None)


register("cpu", "minifuse.kernels.cpu", "numpy")
register("cuda", "minifuse.kernels.cuda", "cupy")
