"""Argument checks and saved-array helpers shared by the fused functions.

Every check runs at the Python boundary, before any kernel: a kernel does no bounds checks, so
a wrong shape, dtype or device must fail here, naming the function and the argument, with the
wording of the kernels' own checks (``minifuse.kernels.checks``). Tensors may be on any device
with a kernel backend, all on one device; the forward and backward code takes the backend's
kernel package ``K`` (``minifuse.kernels.registry``) and its array module ``K.xp``.
"""
import functools

import numpy as np

from ..autograd.autocast import cast_inputs, dtype_for
from ..autograd.function import mixed_devices
from ..device import array_module
from ..dtypes import bfloat16, is_floating
from ..kernels import registry
from ..kernels.checks import ArrayChecks, choice, contiguous, rows  # noqa: F401  (used by the functions)
from ..tensor import Tensor

# The dtypes the fused training functions take: their backend's kernel dtypes (float32 and float64
# on the CPU; float16 and bfloat16 too on CUDA). Their kernels compute half-precision inputs in
# float32, accumulate parameter gradients in float64 partial sums, and keep row statistics
# (LayerNorm's rstd, softmax's row max and sum) in float32 or wider (`stats_dtype`); their GEMMs
# accumulate in float32 or wider (`linear`, `matmul`).
DEFAULT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=None)
def _checks(dtypes):
    return ArrayChecks(dtypes, lambda fn, name, a: array_module(a))


def dtypes(a):
    """The dtypes the fused functions take for arrays like ``a`` (its backend's kernel dtypes)."""
    backend = registry.for_array(a)
    return DEFAULT_DTYPES if backend is None else backend.dtypes


def kernels(a):
    """The kernel package for raw arrays like ``a`` (the registry's backend for its array type)."""
    return registry.for_array(a).kernels


def stats_dtype(dtype):
    """The dtype of saved row statistics for inputs of ``dtype``: float32 for half precision."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def autocast(fn, cls, *args, policy=None):
    """``args`` cast by fused function ``cls``'s ``autocast`` policy (or ``policy``) under
    ``mf.autocast`` (the GEMM-based functions run in the autocast dtype, LayerNorm in float32),
    before the checks, as the taped ops are; unchanged outside autocast."""
    policy = cls.autocast if policy is None else policy
    if autocast_dtype(fn, policy, *args) is None:
        return args
    return cast_inputs(policy, args)


def autocast_dtype(fn, policy, *args):
    """The autocast dtype on the device of the first Tensor of ``args`` (None: autocast off
    there). Where the backend's kernels do not take it (float16 on the CPU) and the function
    runs in it (``policy`` "lower"), a clear error: running in the inputs' dtype instead would
    compute another function than the taped ops under the same autocast."""
    first = next((a for a in args if isinstance(a, Tensor)), None)
    lower = None if first is None else dtype_for(first)
    if lower is not None and policy == "lower" and lower not in dtypes(first.data):
        names = ", ".join(str(d) for d in dtypes(first.data))
        raise TypeError(f"{fn}: under mf.autocast('{first.device.type}', {lower}) its inputs run in {lower}, "
                        f"which the {first.device.type} kernels do not take ({names}); call it outside "
                        f"autocast, or use the taped ops (layers do this themselves)")
    return lower


def tensor(fn, name, t, like=None, min_ndim=None):
    """``t`` is a floating Tensor of a dtype the backend's kernels take (of ``like``'s dtype and
    device, ``like`` = (name, Tensor))."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: '{name}' must be a Tensor, got {type(t).__name__}")
    if like is not None and t.device != like[1].device:
        raise mixed_devices(fn, like[0], like[1].device, name, t.device)
    _checks(dtypes(t.data)).float_array(fn, name, t.data, min_ndim=min_ndim,
                                        like=None if like is None else (like[0], np.dtype(like[1].dtype)))
    return t


def vector(fn, name, t, size, meaning, like):
    """An optional 1-D Tensor (bias, gamma, beta) of ``size`` elements."""
    if t is not None:
        tensor(fn, name, t, like)
        if tuple(t.shape) != (size,):
            raise ValueError(f"{fn}: '{name}' has shape {tuple(t.shape)}, expected {meaning} = {(size,)}")
    return t


def store_dtype(fn, value, dtype):
    """``input_store_dtype``: None (keep ``dtype``) or a floating dtype no wider than ``dtype``
    (bfloat16 included)."""
    if value is None:
        return None
    try:
        d = np.dtype(value)
    except TypeError:
        raise TypeError(f"{fn}: 'input_store_dtype' must be a dtype such as float16, got {value!r}") from None
    if not is_floating(d) or d.itemsize > dtype.itemsize:
        raise ValueError(f"{fn}: 'input_store_dtype' must be a floating dtype no wider than the input's "
                         f"{dtype}, got {d}")
    return None if d == dtype else d


# ---- inside forward / backward (raw arrays of the array module xp) ---------------------------

def optional(xp, a):
    """``a`` C-contiguous, or None."""
    return None if a is None else contiguous(xp, a)


def _bfloat16(a):
    return bfloat16 is not None and a.dtype == bfloat16


def linear(K, x2, w):
    """x2 (N, K) @ w.T (w (M, K)) into a new (N, M) array, the transpose read in place: NumPy's
    BLAS on the CPU; on a GPU the backend's ``bmm`` (cuBLASLt, which a CUDA graph can capture,
    where CuPy's cuBLAS cannot: a fused training step can be replayed from one). bfloat16 on the
    CPU (CUDA's kernels under the simulator) through ``bmm`` too: NumPy's matmul would return
    float32, the backend's rounds once."""
    out = K.xp.empty((x2.shape[0], w.shape[0]), x2.dtype)
    if K.xp is np and not _bfloat16(x2):
        return np.matmul(x2, w.T, out=out)
    K.bmm(contiguous(K.xp, x2)[None], contiguous(K.xp, w)[None], out[None], trans_b=True)
    return out


def matmul(K, a, b, dtype=None):
    """a @ b for 2-D a, b, through the same calls as `linear`; an operand that is the transpose of
    a C-contiguous array (the ``dz.T`` of a weight gradient) is read in place. ``dtype``: the
    product's (default a's); float32 for half-precision a and b keeps the float32 sums unrounded
    (a weight gradient for float32 master weights: cuBLASLt writes them so on a GPU)."""
    dtype = a.dtype if dtype is None else dtype
    if K.xp is np and (dtype != a.dtype or not _bfloat16(a)):
        return a @ b if dtype == a.dtype else a.astype(dtype) @ b.astype(dtype)
    out = K.xp.empty((a.shape[0], b.shape[1]), dtype)
    ta, tb = (not m.flags.c_contiguous and m.T.flags.c_contiguous for m in (a, b))
    K.bmm((a.T if ta else contiguous(K.xp, a))[None], (b.T if tb else contiguous(K.xp, b))[None], out[None],
          trans_a=ta, trans_b=tb)
    return out


def sum_rows(K, a2, dtype=None):
    """a2 (N, M) summed over its rows (a bias gradient), in ``dtype`` (default a2's; float32 for a
    half-precision a2: the float32 sum unrounded). On a GPU as one product with a row of ones
    (the backend's ``bmm``: cuBLASLt reads a2 at the memory bandwidth, where CuPy's reduction over
    the rows of a wide array walks each column with a stride)."""
    xp = K.xp
    dtype = a2.dtype if dtype is None else dtype
    if xp is np and (dtype != a2.dtype or not _bfloat16(a2)):    # (NumPy would add bfloat16 rows in bfloat16)
        return a2.sum(axis=0, dtype=dtype)
    n, m = a2.shape
    out = xp.empty((1, 1, m), dtype)
    K.bmm(xp.ones((1, 1, n), a2.dtype), contiguous(xp, a2).reshape(1, n, m), out)
    return out.reshape(m)


def store(a, dtype):
    """The array kept for backward: ``a`` itself, or a lower-precision copy (input_store_dtype)."""
    return a if a is None or dtype is None else a.astype(dtype)


def restore(a, dtype):
    """``a`` in ``dtype`` (an astype where it differs; None: as it is)."""
    return a if a is None or dtype is None or a.dtype == dtype else a.astype(dtype)
