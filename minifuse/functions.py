"""Ops as functions: ``mf.exp(x)``, ``mf.cat([a, b])``, ``mf.where(c, a, b)``, ..."""
from .ops import elementwise as E, linalg as L, shape as S
from .tensor import Tensor

__all__ = ["add", "sub", "mul", "div", "pow", "neg", "matmul", "exp", "log", "sqrt", "tanh",
           "sigmoid", "relu", "abs", "maximum", "minimum", "clamp", "sum", "mean", "var", "max",
           "min", "amax", "amin", "reshape", "transpose", "permute", "squeeze", "unsqueeze",
           "flatten", "cat", "concat", "stack", "split", "chunk", "where", "masked_fill",
           "softmax", "log_softmax", "einsum", "std"]


def add(input, other): return E.Add.apply(input, other)
def sub(input, other): return E.Sub.apply(input, other)
def mul(input, other): return E.Mul.apply(input, other)
def div(input, other): return E.Div.apply(input, other)
def pow(input, exponent): return E.Pow.apply(input, exponent)
def neg(input): return -input
def matmul(input, other): return input.matmul(other)
def exp(input): return input.exp()
def log(input): return input.log()
def sqrt(input): return input.sqrt()
def tanh(input): return input.tanh()
def sigmoid(input): return input.sigmoid()
def relu(input): return input.relu()
def abs(input): return input.abs()
def maximum(input, other): return E.Maximum.apply(input, other)
def minimum(input, other): return E.Minimum.apply(input, other)
def clamp(input, min=None, max=None): return input.clamp(min, max)
def sum(input, dim=None, keepdim=False): return input.sum(dim, keepdim)
def mean(input, dim=None, keepdim=False): return input.mean(dim, keepdim)
def var(input, dim=None, keepdim=False, correction=1): return input.var(dim, keepdim, correction)
def std(input, dim=None, keepdim=False, correction=1): return input.std(dim, keepdim, correction)
def max(input, dim=None, keepdim=False): return input.max(dim, keepdim)
def min(input, dim=None, keepdim=False): return input.min(dim, keepdim)
def amax(input, dim=None, keepdim=False): return input.amax(dim, keepdim)
def amin(input, dim=None, keepdim=False): return input.amin(dim, keepdim)
def reshape(input, shape): return input.reshape(shape)
def transpose(input, dim0, dim1): return input.transpose(dim0, dim1)
def permute(input, dims): return input.permute(dims)
def squeeze(input, dim=None): return input.squeeze(dim)
def unsqueeze(input, dim): return input.unsqueeze(dim)
def flatten(input, start_dim=0, end_dim=-1): return input.flatten(start_dim, end_dim)
def split(input, split_size_or_sections, dim=0): return input.split(split_size_or_sections, dim)
def chunk(input, chunks, dim=0): return input.chunk(chunks, dim)
def masked_fill(input, mask, value): return input.masked_fill(mask, value)
def softmax(input, dim): return input.softmax(dim)
def log_softmax(input, dim): return input.log_softmax(dim)


def cat(tensors, dim=0):
    """Join tensors along an existing ``dim``; all other sizes must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError("cat: every element of 'tensors' must be a Tensor")
    ref = tensors[0]
    d = dim % ref.ndim if ref.ndim else 0
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim or t.shape[:d] + t.shape[d + 1:] != ref.shape[:d] + ref.shape[d + 1:]:
            raise ValueError(f"cat: tensors[{i}] has shape {t.shape}, which does not match tensors[0] "
                             f"{ref.shape} outside dim {dim}")
    return S.Cat.apply(*tensors, dim=d)


concat = cat


def stack(tensors, dim=0):
    """Join same-shape tensors along a new ``dim``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensors[{i}] has shape {t.shape}, expected {tensors[0].shape}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


def where(condition, input, other):
    """``input`` where ``condition`` is True, else ``other`` (broadcasting)."""
    return E.Where.apply(condition, input, other)


def einsum(equation, *operands):
    """Einstein summation, differentiable in every operand: ``einsum('bij,bjk->bik', a, b)``.
    Operands may also be given as one list. Subscripts are letters, '...' stands for broadcast
    leading dims, and without '->' the output is the letters that occur once, sorted (NumPy's
    and PyTorch's rule). A letter repeated within one operand (a diagonal) is not supported."""
    if not isinstance(equation, str):
        raise TypeError(f"einsum: 'equation' must be a string, got {type(equation).__name__}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for i, t in enumerate(operands):
        if not isinstance(t, Tensor):
            raise TypeError(f"einsum: operands[{i}] must be a Tensor, got {type(t).__name__}")
    subs, _ = L.parse_einsum(equation, [t.ndim for t in operands])
    sizes = {}
    for i, (s, t) in enumerate(zip(subs, operands)):
        for c, n in zip(s, t.shape):
            if n != 1 and sizes.setdefault(c, (n, i))[0] != n:
                raise ValueError(f"einsum: subscript {c!r} has size {sizes[c][0]} in operands[{sizes[c][1]}] "
                                 f"but {n} in operands[{i}] (shapes "
                                 f"{[tuple(o.shape) for o in operands]})")
    return L.Einsum.apply(equation, *operands)
