"""Elementwise primitive ops. Each is one class: forward on arrays, backward beside it.

Gradients may be returned in the broadcast (output) shape; the engine sums them down.
"""
from ..autograd.function import Function
from ..kernels import activations as A
from ..dtypes import get_default_dtype, is_floating
from ._util import as_operand, check_broadcast, shape_of


class _Binary(Function):
    """Base for ops of two broadcastable operands: checks the shapes once, in apply. An integer
    or bool operand with a floating one takes the floating dtype (PyTorch's promotion)."""
    autocast = "promote"      # mixed float dtypes under mf.autocast: the widest
    true_division = False     # Div: integer operands give the default float dtype

    @classmethod
    def apply(cls, input, other):
        from ..tensor import Tensor
        if not isinstance(input, Tensor):
            input = as_operand(input, other)
        else:
            other = as_operand(other, input)
        check_broadcast(cls.op_name(), shape_of(input), shape_of(other))
        floats = [a.dtype for a in (input, other) if is_floating(a.dtype)]
        target = floats[0] if floats else get_default_dtype() if cls.true_division else None
        if target is not None:
            input, other = (_to_dtype(a, target) for a in (input, other))
        return super().apply(input, other)


def _to_dtype(a, dtype):
    """An integer or bool operand as ``dtype``: a tensor through the recorded ``Cast`` op (so a
    traced graph keeps it an input, not a constant), an array directly."""
    from ..tensor import Tensor
    if is_floating(a.dtype):
        return a
    return Cast.apply(a, dtype) if isinstance(a, Tensor) else a.astype(dtype)


class Add(_Binary):
    """out = input + other"""
    symbol = "+"
    float_only = False

    @staticmethod
    def forward(ctx, input, other):
        return input + other

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(_Binary):
    """out = input - other"""
    symbol = "-"
    float_only = False

    @staticmethod
    def forward(ctx, input, other):
        return input - other

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(_Binary):
    """out = input * other"""
    symbol = "*"
    float_only = False

    @staticmethod
    def forward(ctx, input, other):
        ctx.save_for_backward(input, other)
        return input * other

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (g * b if na else None), (g * a if nb else None)


class Div(_Binary):
    """out = input / other (true division: integers give the default float dtype)"""
    symbol = "/"
    true_division = True

    @staticmethod
    def forward(ctx, input, other):
        ctx.save_for_backward(input, other)
        return input / other

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (g / b if na else None), (-g * a / (b * b) if nb else None)


class Pow(_Binary):
    """out = input ** exponent; d/d input = exponent * input^(exponent-1), d/d exponent = out * log(input)"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input, exponent):
        out = input ** exponent
        ctx.save_for_backward(input, exponent, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, p, out = ctx.saved_tensors
        na, np_ = ctx.needs_input_grad
        ga = g * p * a ** (p - 1) if na else None
        gp = g * out * ctx.xp.log(a) if np_ else None
        return ga, gp


class _Extremum(_Binary):
    """Elementwise max or min; where both are equal the gradient is split evenly (as PyTorch)."""

    ufunc = None      # 'maximum' or 'minimum'
    wins = None       # 'greater' or 'less': where ``input`` is the one picked

    @classmethod
    def forward(cls, ctx, input, other):
        ctx.save_for_backward(input, other)
        return getattr(ctx.xp, cls.ufunc)(input, other)

    @classmethod
    def backward(cls, ctx, g):
        a, b = ctx.saved_tensors
        w = getattr(ctx.xp, cls.wins)(a, b) + 0.5 * (a == b)
        return g * w.astype(g.dtype), g * (1 - w).astype(g.dtype)


class Maximum(_Extremum):
    """out = max(input, other) elementwise"""
    ufunc, wins = "maximum", "greater"


class Minimum(_Extremum):
    """out = min(input, other) elementwise"""
    ufunc, wins = "minimum", "less"


class Neg(Function):
    """out = -input"""
    float_only = False

    @staticmethod
    def forward(ctx, input):
        return -input

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """out = e^input; d/dx = out"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input):
        out = ctx.xp.exp(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


class Log(Function):
    """out = ln(input); d/dx = 1/input"""
    autocast = "float32"

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return ctx.xp.log(input)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Sqrt(Function):
    """out = sqrt(input); d/dx = 1 / (2 out)"""

    @staticmethod
    def forward(ctx, input):
        out = ctx.xp.sqrt(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g / (2 * out)


class Activation(Function):
    """out = act(input) for any activation ``name`` of the table (``minifuse.kernels.activations``):
    the taped op of a row that has no op class of its own."""

    @staticmethod
    def forward(ctx, input, name):
        ctx.save_for_backward(input)
        ctx.activation = A.BY_NAME[name]
        return ctx.activation.forward(ctx.xp, input)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.activation.slope(ctx.xp, x)


class _TableActivation(Function):
    """An activation of the table in ``minifuse.kernels.activations``: forward and slope are the
    table's formulas, the ones the fused kernels are tested against. Saves the input."""
    name = "none"

    @classmethod
    def forward(cls, ctx, input):
        ctx.save_for_backward(input)
        return A.BY_NAME[cls.name].forward(ctx.xp, input)

    @classmethod
    def backward(cls, ctx, g):
        (x,) = ctx.saved_tensors
        return g * A.BY_NAME[cls.name].slope(ctx.xp, x)


class Tanh(_TableActivation):
    """out = tanh(input); d/dx = 1 - tanh(input)^2"""
    name = "tanh"


def sigmoid_array(xp, x):
    """1 / (1 + e^-x) without overflow: e^-|x| never exceeds 1."""
    return A.sigmoid(xp, x)


class Sigmoid(_TableActivation):
    """out = 1 / (1 + e^-input); d/dx = s (1 - s)"""
    name = "sigmoid"


class Relu(_TableActivation):
    """out = max(input, 0) (NaN stays NaN); d/dx = 1 where input > 0, else 0"""
    name = "relu"


class Abs(Function):
    """out = |input|; d/dx = sign(input) (0 at 0)"""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return ctx.xp.abs(input)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.sign(x)


class Clamp(Function):
    """out = min(max(input, min), max); the gradient passes where min <= input <= max."""

    @staticmethod
    def forward(ctx, input, min=None, max=None):
        ctx.save_for_backward(input)
        ctx.bounds = (min, max)
        if max is None:          # one-sided: CuPy's clip refuses a None bound for some dtypes (bfloat16)
            return ctx.xp.maximum(input, ctx.xp.asarray(min, input.dtype)) if min is not None else input.copy()
        if min is None:
            return ctx.xp.minimum(input, ctx.xp.asarray(max, input.dtype))
        return ctx.xp.clip(input, min, max)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        keep = ctx.xp.ones(x.shape, dtype=bool)
        if lo is not None:
            keep &= x >= lo
        if hi is not None:
            keep &= x <= hi
        return g * keep


SQRT_2_OVER_PI, GELU_TANH_C = A.SQRT_2_OVER_PI, A.GELU_TANH_C


class Gelu(Function):
    """GELU. approximate='none': x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (exact, BERT's);
    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2's, Megatron's)."""

    @staticmethod
    def forward(ctx, input, approximate="none"):
        ctx.save_for_backward(input)
        ctx.activation = A.BY_NAME["gelu_tanh" if approximate == "tanh" else "gelu"]
        return ctx.activation.forward(ctx.xp, input)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.activation.slope(ctx.xp, x).astype(g.dtype, copy=False)


class Silu(_TableActivation):
    """SiLU (swish): out = x * sigmoid(x); d/dx = s (1 + x (1 - s))"""
    name = "silu"


class Where(Function):
    """out = input where condition else other (condition is a non-differentiable bool array)."""
    autocast = "promote"
    float_only = False

    @classmethod
    def apply(cls, condition, input, other):
        from ..tensor import Tensor
        like = input if isinstance(input, Tensor) else other
        if not isinstance(like, Tensor):
            raise TypeError("where: 'input' or 'other' must be a Tensor")
        input, other = as_operand(input, like), as_operand(other, like)
        cshape = shape_of(condition)
        shape = check_broadcast("where", shape_of(input), shape_of(other))
        check_broadcast("where", cshape, shape, names=("condition", "input"))
        if not isinstance(condition, Tensor):
            condition = Tensor(like.xp.asarray(condition))
        if condition.dtype != bool:
            raise TypeError(f"where: 'condition' must be a bool tensor, got {condition.dtype}")
        return super().apply(condition, input, other)

    @staticmethod
    def forward(ctx, condition, input, other):
        ctx.save_for_backward(condition)
        return ctx.xp.where(condition, input, other)

    @staticmethod
    def backward(ctx, g):
        (c,) = ctx.saved_tensors
        zero = g.dtype.type(0)
        return None, ctx.xp.where(c, g, zero), ctx.xp.where(c, zero, g)


class Compare(Function):
    """Comparisons (<, <=, >, >=, ==, !=): bool results, never differentiable."""
    float_only = False
    same_dtype = False
    differentiable = False
    _ufuncs = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
               "eq": "equal", "ne": "not_equal"}

    @classmethod
    def apply(cls, input, other, op):
        from ..tensor import Tensor
        if not isinstance(input, Tensor):
            input = as_operand(input, other)
        else:
            other = as_operand(other, input)
        check_broadcast(op, shape_of(input), shape_of(other))
        return super().apply(input, other, op)

    @staticmethod
    def forward(ctx, input, other, op):
        return getattr(ctx.xp, Compare._ufuncs[op])(input, other)


class Cast(Function):
    """out = input converted to ``dtype``; the gradient is converted back."""
    float_only = False
    same_dtype = False      # one tensor argument; and its output dtype is the point of the op
    new_gradients = True    # (astype copies)

    @staticmethod
    def forward(ctx, input, dtype):
        ctx.dtype = input.dtype
        return input.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype)


class ToDevice(Function):
    """out = input copied to ``device``; the gradient is copied back."""
    float_only = False

    @staticmethod
    def forward(ctx, input, device):
        from ..device import device_of, to_device
        ctx.source = device_of(input)
        return to_device(input, device)

    @staticmethod
    def backward(ctx, g):
        from ..device import to_device
        return to_device(g, ctx.source)
