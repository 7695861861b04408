"""Linear layers: y = x W^T + b, and the same followed by an activation (FusedLinear)."""
from __future__ import annotations

from .. import creation, fusions
from ..autograd.grad_mode import is_grad_enabled
from . import functional as F, fused, init
from .dispatch import training_kernels
from .module import Module, Parameter, check_input

__all__ = ["Linear", "FusedLinear"]


class Linear(Module):
    """y = x W^T + b, for x of shape (*, in_features).

    weight: (out_features, in_features), init U(-1/sqrt(in), 1/sqrt(in)) by PyTorch's
    ``kaiming_uniform_(a=sqrt(5))``; bias: (out_features,), init U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(creation.empty(out_features, in_features, dtype=dtype, device=device))
        self.register_parameter(
            "bias", Parameter(creation.empty(out_features, dtype=dtype, device=device)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.layer_default_(self.weight, self.bias)

    kernel_activation = "none"  # the name of this layer's activation in the kernels

    def forward(self, x):
        check_input(type(self).__name__, x, self.in_features, self.weight.dtype)
        y = fused.linear(x, self.weight, self.bias, self.kernel_activation)   # inference: GEMM + one epilogue
        return self._act(F.linear(x, self.weight, self.bias)) if y is None else y

    def _act(self, z):
        return z

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class FusedLinear(Linear):
    """y = act(x W^T + b) with act one of 'relu', 'gelu', 'silu'.

    'gelu' is the tanh approximation by default: 0.5 z (1 + tanh(sqrt(2/pi) (z +
    0.044715 z^3))); ``approximate='none'`` gives the exact x Phi(x). The layer computes
    this one function on every path, with or without bias. Parameters and init as ``Linear``.
    Without recorded gradients ``forward`` runs the fused kernel (GEMM + bias + activation in one
    sweep over the output), with them the taped path (linear, then the activation), or with
    ``fused_training=True`` the fused training function ``minifuse.fusions.fused_linear_act``.
    """

    ACTIVATIONS = ("relu", "gelu", "silu")

    def __init__(self, in_features, out_features, activation="relu", bias=True, approximate="tanh",
                 device=None, dtype=None, fused_training=False):
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"FusedLinear: unknown activation {activation!r}; valid: "
                             f"{', '.join(self.ACTIVATIONS)}")
        if approximate not in ("tanh", "none"):
            raise ValueError(f"FusedLinear: approximate must be 'tanh' or 'none', got {approximate!r}")
        super().__init__(in_features, out_features, bias, device, dtype)
        self.activation, self.approximate = activation, approximate
        self.kernel_activation = "gelu_tanh" if activation == "gelu" and approximate == "tanh" else activation
        self.fused_training = bool(fused_training)

    def forward(self, x):
        # fused_training: with recorded gradients, one fused Function (minifuse.fusions) instead of
        # the taped linear + activation; without, the inference kernel as always.
        if self.fused_training and is_grad_enabled() and training_kernels(x) is not None:
            check_input("FusedLinear", x, self.in_features, self.weight.dtype)
            return fusions.fused_linear_act(x, self.weight, self.bias, self.kernel_activation)
        return super().forward(x)

    def _act(self, z):
        if self.activation == "gelu":
            return F.gelu(z, self.approximate)
        return F.relu(z) if self.activation == "relu" else F.silu(z)

    def extra_repr(self):
        gelu = f", approximate='{self.approximate}'" if self.activation == "gelu" else ""
        return super().extra_repr() + f", activation='{self.activation}'" + gelu
