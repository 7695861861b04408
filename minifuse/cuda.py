"""``mf.cuda``: what PyTorch users ask ``torch.cuda`` about the GPU."""
from .device import _cupy, cuda_available

__all__ = ["is_available", "device_count"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one GPU (the same as ``mf.cuda_available()``)."""
    return cuda_available()


def device_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or a GPU)."""
    return _cupy().cuda.runtime.getDeviceCount() if cuda_available() else 0
