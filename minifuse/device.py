"""Devices and array modules: the one place that knows NumPy from CuPy.

Every op asks `array_module(array)` for the module that owns its inputs (``numpy`` on the CPU,
``cupy`` on CUDA) and calls it; no op ever tests ``device == "cuda"`` itself.
"""
from __future__ import annotations

import numpy as np

from .traced import TracedArray

__all__ = ["Device", "device", "array_module", "device_of", "to_device", "cuda_available"]


class Device:
    """A device name, parsed once: ``Device("cpu")``, ``Device("cuda")``, ``Device("cuda:1")``."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
        if kind == "cpu" and idx:
            raise ValueError(f"device: 'cpu' takes no index, got {spec!r}")
        if idx and not idx.isdigit():
            raise ValueError(f"device: the index in {spec!r} must be a non-negative integer")
        self.type = kind
        self.index = int(idx) if idx else (0 if kind == "cuda" else None)

    def __eq__(self, other):
        if isinstance(other, str):
            other = Device(other)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"


device = Device
CPU = Device("cpu")


def _cupy():
    """Import CuPy or explain what to install."""
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device 'cuda' needs CuPy and numba-cuda: pip install 'minifuse[cuda]' (CUDA 12 "
            "driver) or 'minifuse[cuda13]' (CUDA 13), on a machine with an NVIDIA GPU") from e
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError
    except Exception as e:  # pragma: no cover
        raise RuntimeError("device 'cuda' requested but no NVIDIA GPU is visible to CuPy") from e
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _cupy()
        return True
    except RuntimeError:
        return False


_MODULES = {np.ndarray: np}      # array type -> its module, for the types seen (every op asks)


def array_module(array):
    """``numpy`` for NumPy arrays (and scalars), ``cupy`` for CuPy arrays."""
    kind = type(array)
    found = _MODULES.get(kind)
    if found is None:
        found = np
        if kind.__module__.startswith("cupy"):
            import cupy
            found = cupy
        if len(_MODULES) < 64:
            _MODULES[kind] = found
    return found


def capturing(array) -> bool:
    """True when no value of ``array`` may be read back to the host for a check: a CuPy array
    while CuPy's current stream is being captured into a CUDA graph (the read would synchronise),
    or a traced tensor's array while a trace runs (the value would be the example's)."""
    if array_module(array) is np:
        return isinstance(array, TracedArray)
    import cupy
    return cupy.cuda.get_current_stream().is_capturing()


_CUDA_DEVICES = {}     # GPU index -> its Device (one object each: device_of runs for every op input)


def device_of(array) -> Device:
    if array_module(array) is np:
        return CPU
    index = array.data.device_id
    found = _CUDA_DEVICES.get(index)
    if found is None:
        found = _CUDA_DEVICES[index] = Device(f"cuda:{index}")
    return found


def to_device(array, dev: Device):
    """Copy ``array`` to ``dev`` (no copy when it is already there)."""
    dev = Device(dev)
    if device_of(array) == dev:
        return array
    if dev.type == "cpu":
        return array.get()
    cupy = _cupy()
    with cupy.cuda.Device(dev.index):
        return cupy.asarray(array)
