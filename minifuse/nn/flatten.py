"""Flatten: merge a run of dims into one, e.g. a CNN's (N, C, H, W) features into (N, C*H*W)."""
from __future__ import annotations

from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """y = x with dims start_dim..end_dim merged into one (default: all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
