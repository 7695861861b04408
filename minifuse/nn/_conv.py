"""Convolution and pooling over images (N, C, H, W), built on ``Unfold`` (im2col) and a matrix
product or a max: readable, and as fast as the GEMM for the small images of a lesson."""
from __future__ import annotations

from ..ops.conv import Unfold, out_size
from ..tensor import Tensor
from .functional import bias_like   # this module is imported at the end of functional

__all__ = ["unfold", "conv2d", "max_pool2d"]


def _pair(op, name, value, minimum):
    """(h, w) from an int or a pair of ints, each >= minimum."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair):
        raise ValueError(f"{op}: '{name}' must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair


def _pads(op, padding, kernel, dilation):
    """((top, bottom), (left, right)) from an int, a pair, 'valid' or 'same' (extra row/column at
    the end, as PyTorch)."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in total)
    return tuple((p, p) for p in _pair(op, "padding", padding, 0))


def _image(op, input):
    """``input`` as (N, C, H, W), and whether it was one unbatched (C, H, W) image."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: 'input' must be (N, C, H, W) or (C, H, W), got shape {input.shape}")
    return (input.unsqueeze(0), True) if input.ndim == 3 else (input, False)


def _unfold(op, x, kernel, dilation, padding, stride, pad_value=0.0):
    kernel = _pair(op, "kernel_size", kernel, 1)
    dilation, stride = _pair(op, "dilation", dilation, 1), _pair(op, "stride", stride, 1)
    pads = _pads(op, padding, kernel, dilation)
    if padding == "same" and stride != (1, 1):
        raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
    out = tuple(out_size(s, k, st, p, d) for s, k, st, p, d in zip(x.shape[2:], kernel, stride, pads, dilation))
    if min(out) < 1:
        raise ValueError(f"{op}: the kernel {kernel} (dilation {dilation}) does not fit in the padded input: "
                         f"'input' {x.shape} with padding {pads} gives an output of {out}")
    return Unfold.apply(x, kernel, stride, pads, dilation, pad_value), kernel, out


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding windows as columns: (N, C, H, W) -> (N, C * kh * kw, L), L = OH * OW (im2col)."""
    x, _ = _image("unfold", input)
    if input.ndim == 3:
        raise ValueError(f"unfold: 'input' must be (N, C, H, W), got shape {input.shape}")
    return _unfold("unfold", x, kernel_size, dilation, padding, stride)[0]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation, as PyTorch: out[n, o] = bias[o] + sum over the channels c of o's group and
    the kernel offsets (i, j) of weight[o, c, i, j] * x_padded[n, c, s_h oh + d_h i, s_w ow + d_w j].
    ``weight`` is (out_channels, in_channels / groups, kh, kw); ``padding`` an int, a pair,
    'valid' or 'same'. Computed as unfold, then one (batched) matrix product per group."""
    x, unbatched = _image("conv2d", input)
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        raise ValueError(f"conv2d: 'weight' must be a 4-D Tensor (out_channels, in_channels / groups, kh, kw), "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    n, c = x.shape[:2]
    o, cg, kh, kw = weight.shape
    if not isinstance(groups, int) or groups < 1 or c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups!r} must be a positive int dividing in_channels ({c}) and "
                         f"out_channels ({o})")
    if cg * groups != c:
        raise ValueError(f"conv2d: 'input' has {c} channels but 'weight' {tuple(weight.shape)} expects "
                         f"{cg * groups} ({cg} per group x {groups} groups)")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"conv2d: 'bias' must have shape ({o},), got {tuple(bias.shape)}")
    cols, _, (oh, ow) = _unfold("conv2d", x, (kh, kw), dilation, padding, stride)
    cols = cols.reshape(n, groups, cg * kh * kw, oh * ow)
    out = weight.reshape(groups, o // groups, cg * kh * kw).matmul(cols).reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias_like(out, bias).reshape(1, o, 1, 1)
    return out[0] if unbatched else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The maximum over each window (padding counts as -inf); ``stride`` defaults to the kernel
    size. Where a window holds its maximum more than once, the gradient is shared among them
    (PyTorch gives it to the first): the same function, another subgradient at ties."""
    if ceil_mode or return_indices:
        raise NotImplementedError("max_pool2d: ceil_mode and return_indices are not supported")
    x, unbatched = _image("max_pool2d", input)
    kernel = _pair("max_pool2d", "kernel_size", kernel_size, 1)
    pads = _pads("max_pool2d", padding, kernel, (1, 1)) if not isinstance(padding, str) else None
    if pads is None or any(p > k // 2 for (p, _), k in zip(pads, kernel)):
        raise ValueError(f"max_pool2d: 'padding' must be an int or pair of at most half the kernel size "
                         f"{kernel}, got {padding!r}")
    n, c = x.shape[:2]
    cols, kernel, (oh, ow) = _unfold("max_pool2d", x, kernel, dilation, padding,
                                     kernel if stride is None else stride, float("-inf"))
    out = cols.reshape(n, c, kernel[0] * kernel[1], oh * ow).amax(2).reshape(n, c, oh, ow)
    return out[0] if unbatched else out
