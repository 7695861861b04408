"""Mixed-precision training helpers (PyTorch's ``torch.amp``): ``GradScaler``, dynamic loss
scaling."""
from .grad_scaler import GradScaler

__all__ = ["GradScaler"]
