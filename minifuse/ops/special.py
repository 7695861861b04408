"""erf for NumPy and CuPy arrays: the one place that picks scipy.special or cupyx."""
import numpy as np


def erf(x):
    if isinstance(x, np.ndarray) or np.isscalar(x):
        from scipy.special import erf as _erf
        return _erf(x)
    from cupyx.scipy.special import erf as _erf  # pragma: no cover - CUDA only
    return _erf(x)
