"""Embedding: a lookup table, y[..., :] = weight[index[...], :]."""
from __future__ import annotations

from .. import creation
from . import functional as F, init
from .module import Module, Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """weight: (num_embeddings, embedding_dim), init N(0, 1) as PyTorch. The gradient of a row is
    the sum of the output gradients at the positions that picked it."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        init.normal_(self.weight)

    def forward(self, index):
        return F.embedding(index, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
