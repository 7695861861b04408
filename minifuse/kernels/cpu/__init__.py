"""Fused CPU kernels on NumPy arrays (Numba @njit, cached, parallel over rows / heads).

GEMMs run in NumPy's BLAS; the kernels fuse everything around them. Every entry point checks
its arguments in Python first; float32 and float64, all arrays one dtype.

Threads: Numba's OpenMP workers and OpenBLAS's threads take turns on the same cores. With
GNU OpenMP's default (workers spin after each parallel region) the GEMM that follows a fused
kernel ran 2x slower (linear_act 24 ms against a 11 ms GEMM, measured); OMP_WAIT_POLICY=passive
puts them to sleep instead. It is set here only when the user has not set it, and it only takes
effect if no OpenMP runtime is loaded yet (the benchmark prints the value in force).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from .attention import attention, attention_packed
from .epilogue import ACTIVATIONS, bias_act_
from .glu import bias_glu
from .layernorm import residual_layer_norm
from .layers import mlp, transformer_layer
from .linear import linear_act

__all__ = ["ACTIVATIONS", "attention", "attention_packed", "bias_act_", "bias_glu", "linear_act",
           "mlp", "residual_layer_norm", "transformer_layer"]
