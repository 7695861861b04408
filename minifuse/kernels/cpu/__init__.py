"""Fused CPU kernels on NumPy arrays (Numba @njit, cached, parallel over rows / heads).

GEMMs run in NumPy's BLAS; the kernels fuse everything around them. Every entry point checks
its arguments in Python first; float32 and float64, all arrays one dtype.
"""
from .attention import attention, attention_packed
from .epilogue import ACTIVATIONS, bias_act_
from .glu import bias_glu
from .layernorm import residual_layer_norm
from .layers import mlp, transformer_layer
from .linear import linear_act

__all__ = ["ACTIVATIONS", "attention", "attention_packed", "bias_act_", "bias_glu", "linear_act",
           "mlp", "residual_layer_norm", "transformer_layer"]
