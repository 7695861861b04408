"""Unfold (im2col): the sliding windows of an image as columns, so that a convolution is one
matrix product and a pooling one reduction (``nn.functional.conv2d``, ``max_pool2d``)."""
from ..autograd.function import Function


def out_size(size, kernel, stride, pads, dilation):
    """Output length along one spatial dim: floor((size + pads - dilation (kernel - 1) - 1) / stride) + 1."""
    return (size + pads[0] + pads[1] - dilation * (kernel - 1) - 1) // stride + 1


def _windows(kernel, stride, dilation, out):
    """For each kernel offset k along one dim: the slice of the padded input it reads."""
    return [slice(k * dilation, k * dilation + stride * (out - 1) + 1, stride) for k in range(kernel)]


class Unfold(Function):
    """(N, C, H, W) -> (N, C * kh * kw, OH * OW): column l holds the window of output position l,
    channel-major then kernel row, kernel column (PyTorch's ``unfold`` layout). ``pads`` is
    ((top, bottom), (left, right)), filled with ``pad_value``. The backward adds each column
    entry back onto the input element it was read from (windows overlap when stride < kernel)."""

    @staticmethod
    def forward(ctx, input, kernel, stride, pads, dilation, pad_value=0.0):
        xp = ctx.xp
        n, c, h, w = input.shape
        oh, ow = (out_size(s, k, st, p, d) for s, k, st, p, d in zip((h, w), kernel, stride, pads, dilation))
        padded = xp.pad(input, ((0, 0), (0, 0)) + tuple(pads), constant_values=pad_value)
        rows = _windows(kernel[0], stride[0], dilation[0], oh)
        cols = _windows(kernel[1], stride[1], dilation[1], ow)
        out = xp.stack([padded[:, :, r, q] for r in rows for q in cols], axis=2)   # (N, C, kh*kw, OH, OW)
        ctx.shape, ctx.pads, ctx.windows, ctx.out = padded.shape, pads, (rows, cols), (oh, ow)
        return out.reshape(n, c * kernel[0] * kernel[1], oh * ow)

    @staticmethod
    def backward(ctx, g):
        n, c, hp, wp = ctx.shape
        rows, cols = ctx.windows
        g = g.reshape(n, c, len(rows) * len(cols), -1)
        grad = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        for k, (r, q) in enumerate((r, q) for r in rows for q in cols):
            grad[:, :, r, q] += g[:, :, k].reshape(n, c, *ctx.out)
        (top, bottom), (left, right) = ctx.pads
        return grad[:, :, top:hp - bottom, left:wp - right]
