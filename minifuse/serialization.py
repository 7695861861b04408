"""``mf.save`` / ``mf.load``: a state dict to and from a safetensors file (bit-exact)."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["save", "load"]


def _safetensors():
    try:
        from safetensors import numpy as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("mf.save / mf.load need the safetensors package: pip install 'minifuse[io]'") from e
    return st


def save(state_dict, path):
    """Write ``{name: Tensor or array}`` to ``path`` in the safetensors format."""
    from .tensor import Tensor
    arrays = {}
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"save: keys must be strings, got {k!r}")
        arr = v.__array__() if isinstance(v, Tensor) else np.asarray(v)
        arrays[k] = np.ascontiguousarray(arr)
    _safetensors().save_file(arrays, os.fspath(path), metadata={"format": "minifuse"})


def load(path):
    """Read a safetensors file into ``{name: Tensor}`` (on the CPU, dtypes as stored)."""
    from .tensor import Tensor
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    try:
        arrays = _safetensors().load_file(path)
    except Exception as e:  # safetensors raises its own error types for damaged headers and data
        raise ValueError(f"load: {path} is not a valid safetensors file (corrupt or truncated?): {e}") from e
    return {k: Tensor(v) for k, v in arrays.items()}
