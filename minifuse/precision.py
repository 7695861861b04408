"""How float32 matrix products may be computed on CUDA: PyTorch's
``set_float32_matmul_precision`` / ``get_float32_matmul_precision``, process-wide.

- ``"highest"`` (default): float32 arithmetic, the GEMMs on the GPU's float32 cores (no TF32),
  as torch with ``allow_tf32 = False``.
- ``"high"``: float32 accuracy from the tensor cores, by the 3xTF32 split
  (`minifuse.kernels.cuda.tf32x3`): each operand is hi + lo, both TF32 numbers, and a @ b is
  alo bhi + ahi blo + ahi bhi, one TF32 GEMM over three times the inner size with float32
  accumulation. Measured on an H200 (BENCHMARKS.md), 4096 x 768 -> 3072 + bias + gelu(tanh):
  relative error 2.1e-6 against float64 where the float32 cores give 5.6e-7 and one TF32 GEMM
  3.0e-4; 0.211 ms against 0.416 ms (torch float32: 0.415 ms).
- ``"medium"``: one TF32 GEMM (10-bit mantissas in the products, about 1e-3 relative error),
  what torch's ``allow_tf32 = True`` does.

It applies to the float32 GEMMs on CUDA that run through cuBLASLt: those of the fused inference
kernels (linear_act, mlp, transformer_layer: Linear / FusedLinear / MLP / TransformerLayer
without gradients) and of the fused training functions (fused_linear_act, fused_mlp and the
layers' ``fused_training``), forward and backward. Products that are bound by memory rather than
arithmetic keep the float32 cores: those with a single row or column (a bias gradient's sum over
the rows) and batches of small products (attention's, one per head). The CPU,
float16/bfloat16/float64 and the taped ops are unaffected. A CUDA graph keeps the precision it
was captured with.
"""
PRECISIONS = ("highest", "high", "medium")
_state = {"float32_matmul": "highest"}

__all__ = ["set_float32_matmul_precision", "get_float32_matmul_precision"]


def set_float32_matmul_precision(precision):
    """Set the precision of float32 GEMMs on CUDA: 'highest', 'high' or 'medium' (see module)."""
    if precision not in PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: 'precision' must be one of "
                         f"{', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    _state["float32_matmul"] = precision


def get_float32_matmul_precision():
    """The current float32 GEMM precision: 'highest' (default), 'high' or 'medium'."""
    return _state["float32_matmul"]
