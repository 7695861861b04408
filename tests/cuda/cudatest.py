"""Helpers of the CUDA tests (a plain module: tests/conftest.py already owns the name conftest).

CUDA kernel tests run under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1, NumPy arrays, tiny
shapes: CI) or on a GPU (CuPy arrays); elsewhere they are skipped.

No __init__.py here on purpose: a package named `cuda` would shadow NVIDIA's `cuda` namespace
package (cuda-bindings), which numba-cuda imports.
"""
import os

import numpy as np
import pytest

import minifuse as mf

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
GPU = not SIMULATOR and mf.cuda_available()

needs_kernels = pytest.mark.skipif(not (SIMULATOR or GPU),
                                   reason="needs NUMBA_ENABLE_CUDASIM=1 or an NVIDIA GPU with CuPy")
needs_gpu = pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU with CuPy (not the simulator)")


def to_dev(a):
    """A host array as the kernels take it: CuPy on a GPU, NumPy under the simulator."""
    if a is None or not GPU:
        return a
    import cupy
    return cupy.asarray(a)


def to_host(a):
    return a if isinstance(a, np.ndarray) else a.get()
