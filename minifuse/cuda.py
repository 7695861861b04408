"""``mf.cuda``: what PyTorch users ask ``torch.cuda`` about the GPU."""
from .device import Device, _cupy, cuda_available

__all__ = ["is_available", "device_count", "synchronize"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one GPU (the same as ``mf.cuda_available()``)."""
    return cuda_available()


def device_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or a GPU)."""
    return _cupy().cuda.runtime.getDeviceCount() if cuda_available() else 0


def synchronize(device=None) -> None:
    """Wait until all work queued on the GPU ``device`` (None: the current one; an int, 'cuda:N'
    or a Device) has finished, as ``torch.cuda.synchronize``. Work on a GPU runs asynchronously:
    a timer read after a call measures only the time to queue it, unless it synchronizes first.
    Without CuPy or a GPU, the RuntimeError that says what to install."""
    if device is not None:
        if isinstance(device, bool) or not isinstance(device, (int, str, Device)):
            raise TypeError(f"synchronize: 'device' must be None, an int, a str such as 'cuda:0' or a "
                            f"Device, got {type(device).__name__}")
        if not isinstance(device, int) and Device(device).type != "cuda":
            raise ValueError(f"synchronize: 'device' must be a CUDA device, got {str(Device(device))!r}")
    cupy = _cupy()
    if device is None:
        cupy.cuda.Device().synchronize()
        return
    index = device if isinstance(device, int) else Device(device).index
    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise ValueError(f"synchronize: 'device' {index} is not one of the {count} GPUs CuPy sees")
    cupy.cuda.Device(index).synchronize()
