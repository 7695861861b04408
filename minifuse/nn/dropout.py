"""Dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element, in training mode only."""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` while training and scale the rest by 1/(1-p), so the
    expected output equals the input; the identity in eval mode. The mask comes from the global
    generator (``mf.manual_seed`` makes it repeatable)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


def inactive(dropout):
    """True when a dropout module does nothing now (eval mode, p = 0, or Identity)."""
    return not dropout.training or getattr(dropout, "p", 0.0) == 0.0
