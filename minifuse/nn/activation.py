"""Activation modules: thin wrappers of the functions in ``minifuse.nn.functional``."""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["ReLU", "GELU", "SiLU", "Sigmoid", "Tanh"]


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
