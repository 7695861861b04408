"""Array-level kernels: plain functions on arrays, no Tensor, no autograd.

`minifuse.kernels.cpu` holds the fused Numba kernels for NumPy arrays; a CUDA backend mirrors the
same names and signatures.
"""
