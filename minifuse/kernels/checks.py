"""Argument checks run in Python before any compiled kernel sees an array, for both backends.

The kernels do no bounds checks (that is what lets them vectorize, and a CUDA thread has no
error path), so every shape, dtype, contiguity, device and `out` problem must be caught here,
with a message naming the function, the argument, what was expected and what came.

The CPU and CUDA kernels have the same names, signatures and messages, so the checks are written
once, here, and only what differs is a parameter: `ArrayChecks` holds which arrays a backend
takes (its array type, its float dtypes, where an array lives). `cpu/checks.py` and
`cuda/checks.py` bind these checks to their backend; `validate.py` builds each kernel's whole
argument validation from them. This module imports NumPy only: CPU use must never import CuPy or
numba-cuda.
"""
import math

import numpy as np

from ..traced import plain


def _words(names):
    """['a', 'b', 'c'] -> 'a, b or c'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class ArrayChecks:
    """The checks that depend on which arrays a backend takes.

    dtypes: the float dtypes its kernels compute in. module_of(fn, name, a): the array module that
    owns `a` (numpy, cupy), a TypeError naming the argument for anything else. device_of(a): the
    device `a` is on (None for a host array), for a backend with several (CUDA); None for one
    with a single place (CPU), where comparing modules and devices could never fail and would
    only cost launch time.
    max_row: the longest row (LayerNorm width, softmax length) its row kernels take, or None.

    `like` = (name0, ref) names the argument whose dtype (and module and device) the others must
    share; ref is that array, or its dtype alone (what the CPU kernels' callers pass).
    """

    def __init__(self, dtypes, module_of, device_of=None, max_row=None):
        self.dtypes = tuple(dtypes)
        self._dtype_set = frozenset(self.dtypes)      # (a hash lookup: every argument of every call asks)
        self.max_row = max_row
        self.dtype_words = _words([d.name for d in self.dtypes])
        self.module_of = module_of
        self.device_of = device_of

    def float_array(self, fn, name, a, ndim=None, min_ndim=None, like=None):
        """`a` is a float array of this backend (sharing `like`'s dtype, module and device when
        given) with `ndim`, or at least `min_ndim`, dims. Returns its array module."""
        xp = self.module_of(fn, name, a)
        if a.dtype not in self._dtype_set:
            raise TypeError(f"{fn}: '{name}' must be {self.dtype_words}, got {a.dtype}")
        if like is not None:
            name0, ref = like
            if isinstance(ref, np.dtype):
                dtype0 = ref
            else:
                dtype0 = ref.dtype
                if self.device_of is not None:   # the place first: a copy is the fix, not a cast
                    self._same_place(fn, name, a, xp, name0, ref)
            if a.dtype != dtype0:
                raise TypeError(f"{fn}: '{name}' has dtype {a.dtype}, expected {dtype0} "
                                f"(the dtype of '{name0}'; all arrays must share one dtype)")
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{fn}: '{name}' must be {ndim}-D, got shape {tuple(a.shape)}")
        if min_ndim is not None and a.ndim < min_ndim:
            raise ValueError(f"{fn}: '{name}' needs at least {min_ndim} dims, got shape {tuple(a.shape)}")
        return xp

    def _same_place(self, fn, name, a, xp, name0, a0):
        if xp is not self.module_of(fn, name0, a0) or self.device_of(a) != self.device_of(a0):
            raise ValueError(f"{fn}: '{name}' is on another device than '{name0}' "
                             f"({_place(self.device_of(a))} vs {_place(self.device_of(a0))}); move it with "
                             f"cupy.asarray under that device first")

    def row_length(self, fn, width):
        """Rows of `width` elements fit the backend's row kernels."""
        if self.max_row is not None and width > self.max_row:
            raise ValueError(f"{fn}: rows of {width} elements are longer than the CUDA kernel's limit "
                             f"of {self.max_row}")

    def vector(self, fn, name, a, size, meaning, like):
        """An optional 1-D parameter (bias, gamma, ...) of `size`; returned C-contiguous (a cheap
        copy when it is a strided view), or None."""
        if a is None:
            return None
        xp = self.float_array(fn, name, a, like=like)
        shape(fn, name, a, (size,), meaning)
        return contiguous(xp, a)

    def output(self, fn, out, expected, like, inputs=()):
        """`out` checked (or allocated like `like` when None): expected shape, dtype and device,
        C-contiguous, writeable, and not overlapping any array in `inputs` (the kernels read
        inputs after writing out)."""
        if out is None:
            name0, ref = like
            if isinstance(ref, np.dtype):     # a dtype alone comes from the CPU's callers
                return np.empty(tuple(expected), ref)
            return self.module_of(fn, name0, ref).empty(tuple(expected), ref.dtype)
        xp = self.float_array(fn, "out", out, like=like)
        shape(fn, "out", out, expected, "the result shape")
        c_contiguous(fn, "out", out)
        if not getattr(out.flags, "writeable", True):   # CuPy arrays are always writeable
            raise ValueError(f"{fn}: 'out' is read-only")
        no_overlap(xp, fn, ("out", out), inputs)
        return out


def _place(device):
    """A device id as the messages name it: the GPU's number, or 'host' (None: a NumPy array)."""
    return "host" if device is None else f"GPU {device}"


# ---- checks that hold for any array type ------------------------------------------------------

def shape(fn, name, a, expected, meaning):
    """`a.shape == expected`; `meaning` spells the expected shape symbolically, e.g. '(M,)'."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{fn}: '{name}' has shape {tuple(a.shape)}, expected {meaning} = {tuple(expected)}")


def no_overlap(xp, fn, written, inputs):
    """The array a kernel writes, `written` = (name, array), shares no memory with any of `inputs`
    ((name, array) pairs; None entries skipped): the kernels read inputs while they write, so an
    overlap would change the answer (one path would see the new values, the other the old)."""
    name0, w = written
    for name, a in inputs:
        if a is not None and xp.may_share_memory(w, a):
            raise ValueError(f"{fn}: '{name0}' overlaps '{name}' (it is written while '{name}' is read); "
                             f"pass arrays that do not share memory")


def c_contiguous(fn, name, a):
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: '{name}' must be C-contiguous (it is written in place), "
                         f"got strides {a.strides} for shape {tuple(a.shape)}")


def choice(fn, name, value, allowed):
    """`value` is one of `allowed`. Returns its entry when `allowed` is a dict (the CPU maps
    names to kernel codes), else the value itself (CUDA kernels are compiled per name)."""
    if value not in allowed:
        raise ValueError(f"{fn}: '{name}' must be one of {sorted(allowed)}, got {value!r}")
    return allowed[value] if isinstance(allowed, dict) else value


def contiguous(xp, a):
    """`a` itself when C-contiguous, else a C-contiguous copy (CuPy's ascontiguousarray costs
    ~7 us of Python even when there is nothing to copy)."""
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def rows(xp, a, last):
    """The (N, last) C-contiguous 2-D view of `a` (..., last); copies only a non-contiguous `a`."""
    return flat_rows(contiguous(xp, a), last)


def flat_rows(a, last):
    """`a` (..., last) reshaped to (N, last), N the product of the leading dims (spelt out: with
    last == 0, reshape(-1, 0) has no N to infer)."""
    return a.reshape(math.prod(a.shape[:-1]), last)


def mask_values(fn, name, mask):
    """A key-padding mask's values (NumPy or CuPy): bool, or numbers that are exactly 0 (padding)
    or 1 (keep). Anything else (2, 0.5, NaN, a string) is refused rather than read one way by one
    path and another way by the next. A CuPy mask is read on the host, except while a CUDA graph
    is being captured (reading is not allowed then; a captured mask was checked when it was made)."""
    kind = getattr(getattr(mask, "dtype", None), "kind", None)
    if kind not in tuple("biuf"):
        raise TypeError(f"{fn}: '{name}' must be bool or numbers 0 (padding) / 1 (keep), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if kind == "b" or mask.size == 0 or capturing(mask):
        return
    mask = plain(mask)       # while a trace runs: a check of the example's mask, not a graph input's use
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        values = mask[bad].ravel()[:3].tolist()
        raise ValueError(f"{fn}: '{name}' must hold only 0 (padding) and 1 (keep), got values such as {values}")


def capturing(a):
    """A CUDA graph is being captured on the current stream (only for a CuPy array `a`)."""
    if isinstance(a, np.ndarray):
        return False
    import cupy
    return cupy.cuda.runtime.streamIsCapturing(cupy.cuda.get_current_stream().ptr) != 0


def key_mask_values(fn, mask, batch, keys):
    """A key mask's dtype, values and shape, once the backend has it as one of its arrays: (B, Sk)
    of bool or 0/1 numbers (`mask_values`)."""
    mask_values(fn, "key_mask", mask)
    shape(fn, "key_mask", mask, (batch, keys), "(B, Sk)")


def eps(fn, value, name="eps"):
    """A LayerNorm epsilon: a real number, finite and >= 0 (the kernels and the taped formula
    would disagree on anything else). Returned as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: '{name}' must be a real number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: '{name}' must be a finite number >= 0, got {value!r}")
    return float(value)


def real_number(fn, name, value):
    """`value` is a real scalar (a Python or NumPy number); returned unchanged."""
    if not np.isscalar(value) or not np.isreal(value):
        raise TypeError(f"{fn}: '{name}' must be a real number, got {value!r}")
    return value
