"""Activation modules: thin wrappers of the functions in ``minifuse.nn.functional``."""
from __future__ import annotations

import warnings

from . import functional as F
from .module import Module

__all__ = ["ReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "LeakyReLU", "Softmax", "LogSoftmax"]


class ReLU(Module):
    """y = max(x, 0)"""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (approximate='none', the default), or
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate='tanh')."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate='{self.approximate}'"


class SiLU(Module):
    """y = x sigmoid(x)"""

    def forward(self, x):
        return F.silu(x)


class Sigmoid(Module):
    """y = 1 / (1 + e^-x)"""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """y = tanh(x)"""

    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(Module):
    """y = x where x > 0, else negative_slope * x"""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


def _implicit_dim(layer, ndim):
    """PyTorch's deprecated choice when no ``dim`` is given: 0 for 0-, 1- and 3-D inputs, else 1."""
    warnings.warn(f"{layer}: implicit dimension choice is deprecated; pass dim=", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """y = e^x / sum(e^x) along ``dim``"""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, _implicit_dim("Softmax", x.ndim) if self.dim is None else self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """y = log softmax(x) along ``dim`` (pairs with ``NLLLoss``)"""

    def forward(self, x):
        return F.log_softmax(x, _implicit_dim("LogSoftmax", x.ndim) if self.dim is None else self.dim)
