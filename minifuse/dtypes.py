"""The dtypes minifuse knows. They are NumPy dtypes, so ``tensor.dtype == np.float32`` works."""
import numpy as np

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

try:   # bfloat16: NumPy has none; ml_dtypes provides it (pip install 'minifuse[bfloat16]')
    import ml_dtypes as _ml_dtypes
    bfloat16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the install
    _ml_dtypes = bfloat16 = None

HALF = (float16,) + ((bfloat16,) if bfloat16 is not None else ())
FLOATING = HALF + (float32, float64)
SUPPORTED = FLOATING + (int32, int64, bool_, np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))

_default = float32


def get_default_dtype():
    return _default


def set_default_dtype(dtype):
    """Dtype of tensors made from Python floats and of factory functions (float32 unless changed)."""
    global _default
    dtype = as_dtype(dtype)
    if dtype not in FLOATING:
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {dtype}")
    _default = dtype


def as_dtype(dtype):
    """Normalise ``dtype`` (``mf.float32``, ``np.float32``, ``'float32'``) to a NumPy dtype."""
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: cannot interpret {dtype!r} as a dtype") from e
    if d not in SUPPORTED:
        hint = " (bfloat16 needs ml_dtypes: pip install 'minifuse[bfloat16]')" if str(d) == "bfloat16" else ""
        raise TypeError(f"dtype: {d} is not supported (use float16, bfloat16, float32, float64, int32, int64 or "
                        f"bool){hint}")
    return d


def is_floating(dtype) -> bool:
    return np.dtype(dtype) in FLOATING


def finfo(dtype):
    """``np.finfo`` for every floating dtype here (NumPy's refuses ml_dtypes' bfloat16)."""
    dtype = np.dtype(dtype)
    if bfloat16 is not None and dtype == bfloat16:
        return _ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def cast_exactly(array, dtype, what):
    """``array`` (NumPy) as ``dtype``, refusing the casts that lose values rather than precision:
    Python objects (None would become NaN), complex to real, finite values that overflow to
    inf, and to integers or bool anything that does not come back unchanged. Rounding a float to
    a narrower float is allowed. Raises ValueError naming ``what``."""
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if array.dtype.kind not in "biufc" and array.dtype not in FLOATING:
        raise ValueError(f"{what} holds {array.dtype} values, not numbers (expected {dtype})")
    if array.dtype.kind == "c" and dtype.kind != "c":
        raise ValueError(f"{what} is complex ({array.dtype}); casting it to {dtype} would drop the imaginary part")
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(dtype)
        if dtype.kind in "biu":   # NaN != NaN: a NaN cast to an integer counts as lost
            lost = out.astype(array.dtype) != array
        else:
            lost = np.isfinite(array) & ~np.isfinite(out)
    if lost.any():
        bad = array[lost].reshape(-1)[0].item()
        raise ValueError(f"{what}: the value {bad!r} does not fit {dtype} (casting would change it)")
    return out
