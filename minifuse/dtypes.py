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
