"""Fused training functions (Megatron-LM ``core.fusions`` style): each is one ``Function``, so one
node on the tape, whose forward and backward are one Numba kernel each (GEMMs through BLAS
alongside), and which saves only what its backward needs. CPU and CUDA tensors alike: each runs
the kernels of its tensors' backend (``minifuse.kernels.registry``). See docs/fused-training.md.

    bias_gelu(y, bias, approximate='tanh')         gelu(y + bias)
    swiglu(y), bias_swiglu(y, bias)                silu(a) * b, [a | b] = y (+ bias)
    weighted_swiglu(y, weights)                    swiglu(y) * weights, one weight per row
    fused_linear_act(x, weight, bias, activation, save='preact'|'recompute')
    fused_mlp(x, w1, b1, w2, b2, activation, save)  act(x W1^T + b1) W2^T + b2, fc2's input recomputed
    residual_layer_norm(x, residual, gamma, beta, eps)
    fused_attention(qkv, key_mask, num_heads)      multi-head softmax(Q K^T / sqrt(Dh) + mask) V
    gather_rows(x, index), scatter_rows(rows, index, n)   rows moved by an index (packed training)
    fused_transformer_layer(x, weights, key_mask, num_heads, eps)   a post-LN layer, the five above as one node

``input_store_dtype=float16`` (every function) keeps the saved activations in half precision.
"""
# each module's __all__: its Function classes and their checked public functions
from .activation import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .layer import *  # noqa: F401,F403
from .layer_norm import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .mlp import *  # noqa: F401,F403
from .packing import *  # noqa: F401,F403
