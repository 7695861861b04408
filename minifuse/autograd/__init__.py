"""Tape-based reverse-mode autograd: grad mode, Function, the engine and gradcheck."""
from .autocast import autocast, get_autocast_dtype, is_autocast_enabled
from .engine import backward
from .function import Context, Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import gradcheck, GradcheckError

__all__ = ["backward", "Function", "Context", "gradcheck", "GradcheckError", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "autocast", "is_autocast_enabled", "get_autocast_dtype"]
