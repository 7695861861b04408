"""Loss modules: thin wrappers of the losses in ``minifuse.nn.functional``."""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "NLLLoss", "BCEWithLogitsLoss"]


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


class NLLLoss(Module):
    """loss = -input[target] for log-probabilities ``input`` (e.g. ``LogSoftmax(dim=1)``'s output),
    averaged over targets that are not ``ignore_index``."""

    def __init__(self, ignore_index=-100, reduction="mean"):
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input, target):
        return F.nll_loss(input, target, self.ignore_index, self.reduction)

    def extra_repr(self):
        return f"reduction='{self.reduction}'"


class BCEWithLogitsLoss(Module):
    """loss = -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] for logits x and targets y in
    [0, 1], with optional ``weight`` w and ``pos_weight`` p (one per class, the last dim)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = reduction

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)

    def extra_repr(self):
        return f"reduction='{self.reduction}'"
