"""The argument validation of the kernels that both backends have, one sequence per kernel.

`minifuse.kernels.cpu` and `minifuse.kernels.cuda` take the same arguments and reject bad ones with
the same errors, checked in the same order; so each kernel's validation is written once, here, and
takes the backend's `ArrayChecks` (`c`, from cpu/checks.py or cuda/checks.py) for what differs: the
array type, the dtypes, the device. `choice` gives back the backend's own entry for a name (a
kernel code on the CPU, the name on CUDA). What a backend does beyond this (key masks, CUDA's row
length limit, the attention method) stays in the backend.
"""
import numpy as np

from .checks import choice, contiguous, shape

MLP_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "glu", "swiglu")
GATE_OF = {"glu": "sigmoid", "swiglu": "silu"}   # gated MLP activation -> the gate of its GLU


def weight(c, fn, name, w, in_features, like):
    """weight (M, K) in PyTorch layout with K == in_features; returns M."""
    c.float_array(fn, name, w, ndim=2, like=like)
    if w.shape[1] != in_features:
        raise ValueError(f"{fn}: '{name}' has shape {tuple(w.shape)}, expected (M, K) with K = {in_features}")
    return w.shape[0]


def linear_act(c, fn, x, w, bias, activation, activations, out):
    """x (..., K), weight (M, K), bias (M,) or None, activation in `activations`, out (..., M) or
    None. Returns (bias contiguous or None, the activation's entry, out, allocated when None)."""
    c.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    m = weight(c, fn, "weight", w, x.shape[-1], like)
    bias = c.vector(fn, "bias", bias, m, "(M,)", like)
    act = choice(fn, "activation", activation, activations)
    out = c.output(fn, out, tuple(x.shape[:-1]) + (m,), like, [("x", x), ("weight", w), ("bias", bias)])
    return bias, act, out


def bias_glu(c, fn, y, bias, gate, gates, out):
    """y (..., 2H), bias (2H,) or None, gate in `gates`, out (..., H) or None. Returns (bias
    contiguous or None, the gate's entry, out, allocated when None)."""
    c.float_array(fn, "y", y, min_ndim=1)
    like = ("y", y)
    width = y.shape[-1]
    if width % 2:
        raise ValueError(f"{fn}: 'y' last dim must be even (2H), got shape {tuple(y.shape)}")
    bias = c.vector(fn, "bias", bias, width, "(2H,)", like)
    code = choice(fn, "gate", gate, gates)
    out = c.output(fn, out, tuple(y.shape[:-1]) + (width // 2,), like, [("y", y), ("bias", bias)])
    return bias, code, out


def residual_layer_norm(c, fn, x, residual, gamma, beta, eps):
    """x, residual (..., D) (residual may be None), gamma, beta (D,), eps >= 0. Returns gamma and
    beta contiguous. `out` is the caller's to check: CUDA first checks its row length limit."""
    c.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    d = x.shape[-1]
    if residual is not None:
        c.float_array(fn, "residual", residual, like=like)
        shape(fn, "residual", residual, x.shape, "the shape of 'x'")
    gamma = c.vector(fn, "gamma", gamma, d, "(D,)", like)
    beta = c.vector(fn, "beta", beta, d, "(D,)", like)
    if gamma is None or beta is None:
        raise TypeError(f"{fn}: 'gamma' and 'beta' are required arrays, got None")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"{fn}: 'eps' must be a finite number >= 0, got {eps!r}")
    return gamma, beta


def attention_heads(c, fn, q, k, v):
    """q (B, H, Sq, D), k, v (B, H, Sk, D), one dtype (and device)."""
    c.float_array(fn, "q", q, ndim=4)
    like = ("q", q)
    nb, nh, sq, dh = q.shape
    c.float_array(fn, "k", k, ndim=4, like=like)
    sk = k.shape[2]
    shape(fn, "k", k, (nb, nh, sk, dh), "(B, H, Sk, D)")
    c.float_array(fn, "v", v, ndim=4, like=like)
    shape(fn, "v", v, (nb, nh, sk, dh), "(B, H, Sk, D) like 'k'")


def attention_packed(c, fn, qkv, num_heads):
    """qkv (B, S, 3d) with d = num_heads * Dh."""
    c.float_array(fn, "qkv", qkv, ndim=3)
    if not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"{fn}: 'num_heads' must be a positive int, got {num_heads!r}")
    if qkv.shape[2] % (3 * num_heads):
        raise ValueError(f"{fn}: 'qkv' last dim must be 3 * num_heads * Dh = 3 * {num_heads} * Dh, "
                         f"got shape {tuple(qkv.shape)}")


def mlp(c, fn, x, w1, b1, w2, b2, activation):
    """x (..., C), w1 (H or 2H, C), w2 (Cout, H), b1, b2 or None; a gated activation (GATE_OF)
    needs 2H rows in w1. Returns b1, b2 contiguous (or None)."""
    c.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"{fn}: 'activation' must be one of {list(MLP_ACTIVATIONS)}, got {activation!r}")
    width = weight(c, fn, "w1", w1, x.shape[-1], like)
    b1 = c.vector(fn, "b1", b1, width, "(w1.shape[0],)", like)
    gated = activation in GATE_OF
    if gated and width % 2:
        raise ValueError(f"{fn}: gated '{activation}' needs an even w1.shape[0] (2H), got {tuple(w1.shape)}")
    cout = weight(c, fn, "w2", w2, width // 2 if gated else width, like)
    b2 = c.vector(fn, "b2", b2, cout, "(Cout,)", like)
    return b1, b2


def transformer_layer(c, fn, x, num_heads, params):
    """x (B, S, d), num_heads dividing d, and `params` in the kernel's argument order:
    qkv_w (3d, d), qkv_b, out_w (d, d), out_b, ln1_g, ln1_b, fc1_w (F, d), fc1_b, fc2_w (d, F),
    fc2_b, ln2_g, ln2_b; biases (`*_b` after a weight) may be None, LayerNorm parameters (d,) may
    not. Returns `params` with every 1-D one made contiguous."""
    c.float_array(fn, "x", x, ndim=3)
    like = ("x", x)
    d = x.shape[2]
    if not isinstance(num_heads, (int, np.integer)) or num_heads < 1 or d % num_heads:
        raise ValueError(f"{fn}: 'num_heads' must be a positive int dividing d = {d}, got {num_heads!r}")
    fc1_w = params[6]
    c.float_array(fn, "fc1_w", fc1_w, ndim=2, like=like)    # F comes from it
    f = fc1_w.shape[0]
    layout = [("qkv_w", (3 * d, d), "(3d, d)"), ("qkv_b", (3 * d,), "bias (3d,)"),
              ("out_w", (d, d), "(d, d)"), ("out_b", (d,), "bias (d,)"),
              ("ln1_g", (d,), "(d,)"), ("ln1_b", (d,), "(d,)"),
              ("fc1_w", (f, d), "(F, d)"), ("fc1_b", (f,), "bias (F,)"),
              ("fc2_w", (d, f), "(d, F)"), ("fc2_b", (d,), "bias (d,)"),
              ("ln2_g", (d,), "(d,)"), ("ln2_b", (d,), "(d,)")]
    checked = []
    for (name, expected, meaning), a in zip(layout, params):
        if a is None and meaning.startswith("bias"):
            checked.append(None)
            continue
        xp = c.float_array(fn, name, a, like=like)
        shape(fn, name, a, expected, meaning)
        checked.append(contiguous(xp, a) if len(expected) == 1 else a)
    return checked
