"""The activation table: every activation that minifuse fuses, one row each.

A row names the activation and gives what every path needs of it:

- ``forward(xp, x)`` and ``slope(xp, x)``: the formula and its derivative on whole arrays of the
  array module ``xp`` (NumPy or CuPy). The taped ops (``minifuse.ops.elementwise``) compute with
  these, so the unfused path and the tables below agree by construction.
- the CPU kernels' scalar versions: ``minifuse.kernels.cpu.mathfn.<name>`` and
  ``<name>_slope`` (Numba), dispatched by the codes below (``CODES``);
- the CUDA kernels' scalar versions: ``minifuse.kernels.cuda.mathfn`` builds ``<name>`` and
  ``<name>_slope`` device functions per compute dtype, looked up by name;
- ``graph_op`` / ``graph_attrs``: the taped op (its class name in a traced graph) and the
  attributes that select this activation, what the graph's fusion passes match. A new row needs
  neither: it is taped as the generic ``Activation`` op (``nn.functional.activation(name)``).

Adding an activation: a row here, its two scalar functions in ``kernels/cpu/mathfn.py`` (plus
its arm in ``activate`` / ``derivative`` / ``by_code`` there) and in ``kernels/cuda/mathfn.py``.
Every layer, fused function, kernel and graph pass takes it from there; tests/kernels checks all
rows on every backend. This module imports NumPy only.
"""
import math
from typing import Callable, NamedTuple

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # 0.7978845608028654
GELU_TANH_C = 0.044715
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf(x):
    """erf on NumPy (scipy.special) or CuPy (cupyx.scipy.special) arrays, in x's dtype (SciPy has
    no float16 loop and would hand a float16 input back as float64)."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        from scipy.special import erf
    else:  # pragma: no cover - CUDA only
        from cupyx.scipy.special import erf
    y = erf(x)
    return y.astype(x.dtype, copy=False) if hasattr(x, "dtype") and y.dtype != x.dtype else y


def sigmoid(xp, x):
    """1 / (1 + e^-x) without overflow: e^-|x| never exceeds 1."""
    z = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _gelu(xp, x):
    return 0.5 * x * (1 + _erf(x * INV_SQRT_2))


def _gelu_slope(xp, x):
    return 0.5 * (1 + _erf(x * INV_SQRT_2)) + x * xp.exp(-0.5 * x * x) * INV_SQRT_2PI


def _gelu_tanh(xp, x):
    return 0.5 * x * (1 + xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)))


def _gelu_tanh_slope(xp, x):
    t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * x * x)


def _silu_slope(xp, x):
    s = sigmoid(xp, x)
    return s * (1 + x * (1 - s))


def _sigmoid_slope(xp, x):
    s = sigmoid(xp, x)
    return s * (1 - s)


class Activation(NamedTuple):
    name: str
    forward: Callable      # (xp, x) -> act(x)
    slope: Callable        # (xp, x) -> act'(x)
    # The taped op's class name in a traced graph and the attributes that select this activation.
    # A row without an op of its own is taped as the generic ``ops.elementwise.Activation(x, name)``.
    graph_op: str = "Activation"
    graph_attrs: dict = None


TABLE = (
    Activation("none", lambda xp, x: x, lambda xp, x: xp.ones_like(x), "", {}),   # never traced
    Activation("relu", lambda xp, x: xp.maximum(x, 0), lambda xp, x: (x > 0).astype(x.dtype), "Relu", {}),
    Activation("gelu", _gelu, _gelu_slope, "Gelu", {"approximate": "none"}),
    Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_slope, "Gelu", {"approximate": "tanh"}),
    Activation("silu", lambda xp, x: x * sigmoid(xp, x), _silu_slope, "Silu", {}),
    Activation("sigmoid", sigmoid, _sigmoid_slope, "Sigmoid", {}),
    Activation("tanh", lambda xp, x: xp.tanh(x), lambda xp, x: 1 - xp.tanh(x) ** 2, "Tanh", {}),
)

BY_NAME = {a.name: a for a in TABLE}
NAMES = tuple(BY_NAME)
# The integer a compiled CPU kernel is specialised on (a string would be one compilation per call site).
CODES = {a.name: code for code, a in enumerate(TABLE)}

# Gated linear units: out = gate(a) * b, [a | b] split at the middle, the FIRST half the gate.
GATES = ("sigmoid", "silu")
GATE_OF = {"glu": "sigmoid", "swiglu": "silu"}
# What a linear layer or an MLP may apply: the table's activations and the gated units.
LINEAR_ACTIVATIONS = NAMES + tuple(GATE_OF)


def graph_activation(op, attrs):
    """The table's name for a traced node (op name, attributes), or None when it is no activation."""
    if op == "Activation":                                   # the generic taped op, any row
        return attrs.get("name") if attrs.get("name") in BY_NAME else None
    for a in TABLE:
        if a.graph_op == op and all(attrs.get(k, v) == v for k, v in (a.graph_attrs or {}).items()):
            return a.name
    return None
