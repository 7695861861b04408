"""Conv2d: y = cross-correlation of x (N, C, H, W) with learned kernels, plus a bias."""
from __future__ import annotations

from .. import creation
from . import functional as F, init
from ._conv import _pair
from .module import Module, Parameter, check_input

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W) inputs (``F.conv2d``).

    weight: (out_channels, in_channels / groups, kh, kw), bias: (out_channels,), both initialised
    as PyTorch's: ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    fan_in = in_channels / groups * kh * kw, and the bias from the same range.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode must be 'zeros', got {padding_mode!r}")
        if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups!r} must divide in_channels ({in_channels}) and "
                             f"out_channels ({out_channels})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride, self.dilation = _pair("Conv2d", "stride", stride, 1), _pair("Conv2d", "dilation", dilation, 1)
        self.padding = padding if isinstance(padding, str) else _pair("Conv2d", "padding", padding, 0)
        self.groups = groups
        self.weight = Parameter(creation.empty(out_channels, in_channels // groups, *self.kernel_size,
                                               dtype=dtype, device=device))
        self.register_parameter(
            "bias", Parameter(creation.empty(out_channels, dtype=dtype, device=device)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.layer_default_(self.weight, self.bias)

    def forward(self, x):
        check_input("Conv2d", x, dtype=self.weight.dtype)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")
