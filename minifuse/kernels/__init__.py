"""Array-level kernels: plain functions on arrays, no Tensor, no autograd.

The kernel backends `minifuse.kernels.cpu` (Numba @njit on NumPy arrays) and
`minifuse.kernels.cuda` (numba @cuda.jit on CuPy arrays) export the same entry points with the
same signatures; `registry` picks one for an array type, `activations` is the activation table,
`weights` the transformer layer's weights record, `validate` the argument checks of every entry
point, `compose` the linear, MLP and layer compositions written once over a backend's
primitives. This package imports no backend: CPU use never imports CuPy or numba-cuda.
See docs/architecture.md.
"""
from . import activations, registry  # noqa: F401
