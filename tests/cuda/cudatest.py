"""Helpers of the CUDA tests (a plain module: tests/conftest.py already owns the name conftest).

CUDA kernel tests run under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1, NumPy arrays, tiny
shapes: CI) or on a GPU (CuPy arrays); elsewhere they are skipped. What is here is the CUDA
backend of tests/backends.py (`CUDA`), under the names these tests use.

No __init__.py here on purpose: a package named `cuda` would shadow NVIDIA's `cuda` namespace
package (cuda-bindings), which numba-cuda imports.
"""
import pytest

from backends import CUDA, GPU, SIMULATOR  # noqa: F401  (the one place that decides)

needs_kernels = pytest.mark.skipif(not CUDA.available, reason=CUDA.reason)
needs_gpu = pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU with CuPy (not the simulator)")

to_dev, to_host = CUDA.to_dev, CUDA.to_host
