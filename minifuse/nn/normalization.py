"""LayerNorm: y = (x - mean) / sqrt(var + eps) * gamma + beta over the trailing dims; RMSNorm:
y = x / sqrt(mean(x^2) + eps) * gamma."""
from __future__ import annotations

from .. import creation
from ..kernels import checks
from . import functional as F, fused
from .module import Module, Parameter, check_input

__all__ = ["LayerNorm", "RMSNorm"]


class LayerNorm(Module):
    """Normalise over the last ``len(normalized_shape)`` dims with the biased variance (as PyTorch
    and BERT). weight (gamma) init 1 and bias (beta) init 0, each of shape ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, checks.eps("LayerNorm", eps)
        self.elementwise_affine = elementwise_affine
        w = Parameter(creation.ones(shape, dtype=dtype, device=device)) if elementwise_affine else None
        b = Parameter(creation.zeros(shape, dtype=dtype, device=device)) if elementwise_affine and bias else None
        self.register_parameter("weight", w)
        self.register_parameter("bias", b)

    def forward(self, x):
        dtype = self.weight.dtype if self.weight is not None else None
        check_input("LayerNorm", x, self.normalized_shape[-1], dtype)
        if len(self.normalized_shape) == 1 and self.weight is not None and self.bias is not None:
            y = fused.layer_norm(x, self.weight, self.bias, self.eps)
            if y is not None:
                return y
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last ``len(normalized_shape)`` dims (no
    centring, no bias; LLaMA's norm). ``eps=None``: the machine epsilon of the input's dtype, as
    PyTorch. weight init 1, of shape ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, None if eps is None else float(eps)
        self.elementwise_affine = elementwise_affine
        w = Parameter(creation.ones(shape, dtype=dtype, device=device)) if elementwise_affine else None
        self.register_parameter("weight", w)

    def forward(self, x):
        check_input("RMSNorm", x, self.normalized_shape[-1], None if self.weight is None else self.weight.dtype)
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
