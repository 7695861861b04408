"""``nn.utils``: gradient clipping, as PyTorch's ``torch.nn.utils``."""
from __future__ import annotations

import math

from ..autograd import no_grad
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint norm (all of them as one vector) is at most
    ``max_norm``: each is multiplied by min(1, max_norm / (norm + 1e-6)). Returns the norm before
    clipping (a 0-d tensor). ``norm_type`` is p of the p-norm, or ``float('inf')``."""
    grads = _grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive, got {norm_type}")
    if not grads:
        return Tensor(0.0)
    xp = grads[0].xp
    with no_grad():
        if math.isinf(norm_type):
            peaks = [float(xp.abs(g.data).max()) for g in grads if g.numel()] or [0.0]
            norm = math.nan if any(map(math.isnan, peaks)) else max(peaks)
        else:
            norm = sum(float((xp.abs(g.data.astype(xp.float64)) ** norm_type).sum()) for g in grads) ** (1 / norm_type)
        if error_if_nonfinite and not math.isfinite(norm):
            raise RuntimeError(f"clip_grad_norm_: the total norm of the gradients is {norm}; pass "
                               f"error_if_nonfinite=False to clip anyway")
        scale = min(1.0, max_norm / (norm + 1e-6))
        if scale < 1.0:
            for g in grads:
                g.data *= g.data.dtype.type(scale)
    return Tensor(norm, dtype=grads[0].dtype)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    for g in _grads(parameters):
        g.data[...] = g.xp.clip(g.data, -float(clip_value), float(clip_value))
