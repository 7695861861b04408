"""Array functions whose NumPy and CuPy spellings differ: the one place that picks."""
import numpy as np


def _is_numpy(x):
    return isinstance(x, np.ndarray) or np.isscalar(x)


def erf(x):
    """The error function, elementwise (scipy.special on the CPU, cupyx.scipy.special on CUDA)."""
    if _is_numpy(x):
        from scipy.special import erf as _erf
        return _erf(x)
    from cupyx.scipy.special import erf as _erf  # pragma: no cover - CUDA only
    return _erf(x)


def index_add(target, key, values):
    """target[key] += values, adding where an index repeats (``add.at``; CuPy deprecated
    ``cupyx.scatter_add`` in its favour)."""
    if _is_numpy(target):
        np.add.at(target, key, values)
    else:  # pragma: no cover - CUDA only
        import cupy
        cupy.add.at(target, key, values)
