"""Loss modules: thin wrappers of ``F.cross_entropy`` and ``F.mse_loss``."""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


class CrossEntropyLoss(Module):
    """loss = -(1-s) log softmax(logits)[target] - s mean_c log softmax(logits)[c], averaged over
    targets that are not ``ignore_index`` (s = ``label_smoothing``)."""

    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.ignore_index, self.reduction, self.label_smoothing)

    def extra_repr(self):
        return f"reduction='{self.reduction}'"


class MSELoss(Module):
    """loss = mean((input - target)^2) (or sum / none by ``reduction``)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)

    def extra_repr(self):
        return f"reduction='{self.reduction}'"
