"""Mixed-precision training (PyTorch's ``torch.amp``): ``autocast`` (autograd/autocast.py, also
``mf.autocast``) and ``GradScaler``, dynamic loss scaling."""
from ..autograd.autocast import autocast
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler"]
