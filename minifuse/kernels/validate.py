"""The argument validation of every checked kernel entry point, one sequence per kernel, for both
backends.

`minifuse.kernels.cpu` and `minifuse.kernels.cuda` take the same arguments and reject bad ones
with the same errors, checked in the same order; so each entry point's validation is written once,
here, and takes the backend's `ArrayChecks` (`c`: its array type, dtypes, devices and row length
limit) for what differs. Key masks stay in the backends (a host mask moves to the GPU there).
"""
import numpy as np

from .activations import GATE_OF, LINEAR_ACTIVATIONS, NAMES
from . import checks
from .checks import c_contiguous, choice, contiguous, no_overlap, real_number, shape
from .weights import LayerWeights

# The attention methods: 'loop' (one CPU kernel, no score matrix) or 'bmm' (batched GEMMs around
# one softmax kernel). A backend with one implementation accepts both.
ATTENTION_METHODS = ("loop", "bmm")


def weight(c, fn, name, w, in_features, like):
    """weight (M, K) in PyTorch layout with K == in_features; returns M."""
    c.float_array(fn, name, w, ndim=2, like=like)
    if w.shape[1] != in_features:
        raise ValueError(f"{fn}: '{name}' has shape {tuple(w.shape)}, expected (M, K) with K = {in_features}")
    return w.shape[0]


def bias_act_(c, fn, y, bias, activation):
    """y (N, M) C-contiguous and writeable, bias (M,) or None, activation a table name. Returns bias."""
    xp = c.float_array(fn, "y", y, ndim=2)
    c_contiguous(fn, "y", y)
    if not getattr(y.flags, "writeable", True):
        raise ValueError(f"{fn}: 'y' is read-only (it is written in place)")
    bias = c.vector(fn, "bias", bias, y.shape[1], "(M,)", ("y", y))
    choice(fn, "activation", activation, NAMES)
    no_overlap(xp, fn, ("y", y), [("bias", bias)])
    return bias


def linear_act(c, fn, x, w, bias, activation, out):
    """x (..., K), weight (M, K), bias (M,) or None, activation a table name, out (..., M) or None.
    Returns (bias contiguous or None, out, allocated when None)."""
    c.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    m = weight(c, fn, "weight", w, x.shape[-1], like)
    bias = c.vector(fn, "bias", bias, m, "(M,)", like)
    choice(fn, "activation", activation, NAMES)
    out = c.output(fn, out, tuple(x.shape[:-1]) + (m,), like, [("x", x), ("weight", w), ("bias", bias)])
    return bias, out


def bias_glu(c, fn, y, bias, gate, gates, out):
    """y (..., 2H), bias (2H,) or None, gate in `gates`, out (..., H) or None. Returns (bias
    contiguous or None, out, allocated when None)."""
    c.float_array(fn, "y", y, min_ndim=1)
    like = ("y", y)
    width = y.shape[-1]
    if width % 2:
        raise ValueError(f"{fn}: 'y' last dim must be even (2H), got shape {tuple(y.shape)}")
    bias = c.vector(fn, "bias", bias, width, "(2H,)", like)
    choice(fn, "gate", gate, gates)
    out = c.output(fn, out, tuple(y.shape[:-1]) + (width // 2,), like, [("y", y), ("bias", bias)])
    return bias, out


def residual_layer_norm(c, fn, x, residual, gamma, beta, eps, out):
    """x, residual (..., D) (residual may be None), gamma, beta (D,), eps >= 0, out (..., D) or
    None. Returns (gamma, beta contiguous, out)."""
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
    checks.eps(fn, eps)
    c.row_length(fn, d)
    out = c.output(fn, out, x.shape, like, [("x", x), ("residual", residual), ("gamma", gamma), ("beta", beta)])
    return gamma, beta, out


def _scale_and_method(fn, scale, method):
    choice(fn, "method", method, ATTENTION_METHODS)
    return float(real_number(fn, "scale", scale))


def attention(c, fn, q, k, v, scale, method, out):
    """q (B, H, Sq, D), k, v (B, H, Sk, D), one dtype (and device); out (B, H, Sq, D) or None.
    Returns (scale as a float, out)."""
    scale = _scale_and_method(fn, scale, method)
    c.float_array(fn, "q", q, ndim=4)
    like = ("q", q)
    nb, nh, sq, dh = q.shape
    c.float_array(fn, "k", k, ndim=4, like=like)
    sk = k.shape[2]
    shape(fn, "k", k, (nb, nh, sk, dh), "(B, H, Sk, D)")
    c.float_array(fn, "v", v, ndim=4, like=like)
    shape(fn, "v", v, (nb, nh, sk, dh), "(B, H, Sk, D) like 'k'")
    c.row_length(fn, max(sk, dh))
    return scale, c.output(fn, out, q.shape, like, [("q", q), ("k", k), ("v", v)])


def _num_heads(fn, num_heads, d=None):
    bad = not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool) or num_heads < 1
    if bad or (d is not None and d % num_heads):
        divides = "" if d is None else f" dividing d = {d}"
        raise ValueError(f"{fn}: 'num_heads' must be a positive int{divides}, got {num_heads!r}")


def attention_packed(c, fn, qkv, num_heads, scale, method, out):
    """qkv (B, S, 3d) with d = num_heads * Dh; out (B, S, d) or None. Returns (scale, out)."""
    scale = _scale_and_method(fn, scale, method)
    c.float_array(fn, "qkv", qkv, ndim=3)
    _num_heads(fn, num_heads)
    nb, s, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"{fn}: 'qkv' last dim must be 3 * num_heads * Dh = 3 * {num_heads} * Dh, "
                         f"got shape {tuple(qkv.shape)}")
    c.row_length(fn, max(s, width // (3 * num_heads)))
    return scale, c.output(fn, out, (nb, s, width // 3), ("qkv", qkv), [("qkv", qkv)])


def mlp(c, fn, x, w1, b1, w2, b2, activation):
    """x (..., C), w1 (H or 2H, C), w2 (Cout, H), b1, b2 or None; a gated activation (GATE_OF)
    needs 2H rows in w1. Returns b1, b2 contiguous (or None)."""
    c.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    choice(fn, "activation", activation, LINEAR_ACTIVATIONS)
    width = weight(c, fn, "w1", w1, x.shape[-1], like)
    b1 = c.vector(fn, "b1", b1, width, "(w1.shape[0],)", like)
    gated = activation in GATE_OF
    if gated and width % 2:
        raise ValueError(f"{fn}: gated '{activation}' needs an even w1.shape[0] (2H), got {tuple(w1.shape)}")
    cout = weight(c, fn, "w2", w2, width // 2 if gated else width, like)
    b2 = c.vector(fn, "b2", b2, cout, "(Cout,)", like)
    return b1, b2


def transformer_layer(c, fn, x, weights, num_heads, eps, activation, method):
    """x (B, S, d), `weights` a LayerWeights (shapes in LayerWeights.layout), num_heads dividing d,
    eps >= 0, activation a table name, method an attention method. Returns the record with every
    1-D entry made contiguous."""
    c.float_array(fn, "x", x, ndim=3)
    return _layer(c, fn, ("x", x), x.shape[1], weights, num_heads, eps, activation, method)


def transformer_layer_varlen(c, fn, packed, pk, weights, num_heads, eps, activation, method):
    """rows (T, d) of the Packing `pk`, the rest as `transformer_layer`."""
    packed_rows(c, fn, packed, pk)
    return _layer(c, fn, ("rows", packed), pk.max_seqlen, weights, num_heads, eps, activation, method)


def _layer(c, fn, like, seq, weights, num_heads, eps, activation, method):
    """The layer's arguments besides its input `like` = (name, array (..., d)) of sequences of up
    to `seq` tokens."""
    if not isinstance(weights, LayerWeights):
        raise TypeError(f"{fn}: 'weights' must be a LayerWeights, got {type(weights).__name__}")
    choice(fn, "activation", activation, NAMES)
    choice(fn, "attention_method", method, ATTENTION_METHODS)
    d = like[1].shape[-1]
    _num_heads(fn, num_heads, d)
    checks.eps(fn, eps)
    c.row_length(fn, max(d, seq))
    c.float_array(fn, "fc1_w", weights.fc1_w, ndim=2, like=like)    # F comes from it
    checked = []
    for (name, expected, meaning), a in zip(LayerWeights.layout(d, weights.fc1_w.shape[0]), weights):
        if a is None and meaning.startswith("bias"):
            checked.append(None)
            continue
        xp = c.float_array(fn, name, a, like=like)
        shape(fn, name, a, expected, meaning)
        checked.append(contiguous(xp, a) if len(expected) == 1 else a)
    return LayerWeights._make(checked)

def cu_seqlens(fn, offsets, tokens):
    """cu_seqlens: a 1-D integer array (NumPy, or CuPy: read on the host) of B + 1 offsets from 0
    to `tokens`, non-decreasing. Returns it as a host int64 array."""
    host = offsets.get() if hasattr(offsets, "get") and not isinstance(offsets, np.ndarray) else offsets
    host = np.asarray(host)
    if host.ndim != 1 or host.dtype.kind not in "iu" or host.size == 0:
        raise TypeError(f"{fn}: 'cu_seqlens' must be a 1-D integer array of B + 1 offsets, got "
                        f"{host.dtype} of shape {host.shape}")
    host = host.astype(np.int64)
    if host[0] != 0 or host[-1] != tokens or np.any(np.diff(host) < 0):
        raise ValueError(f"{fn}: 'cu_seqlens' must rise from 0 to the number of rows {tokens} without "
                         f"decreasing, got {host.tolist()[:8]}{' ...' if host.size > 8 else ''}")
    return host


def attention_varlen(c, fn, qkv, offsets, num_heads, scale, method, out):
    """qkv (T, 3d) with d = num_heads * Dh; cu_seqlens (B + 1,) from 0 to T; out (T, d) or None.
    Returns (scale, out, cu_seqlens on the host)."""
    scale = _scale_and_method(fn, scale, method)
    c.float_array(fn, "qkv", qkv, ndim=2)
    _num_heads(fn, num_heads)
    t, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"{fn}: 'qkv' last dim must be 3 * num_heads * Dh = 3 * {num_heads} * Dh, "
                         f"got shape {tuple(qkv.shape)}")
    cu = cu_seqlens(fn, offsets, t)
    c.row_length(fn, max(int(np.diff(cu).max(initial=0)), width // (3 * num_heads)))
    return scale, c.output(fn, out, (t, width // 3), ("qkv", qkv), [("qkv", qkv)]), cu


def packed_rows(c, fn, rows, pk):
    """rows (T, d) of a float dtype, T the packing's token count; `pk` a packing.Packing."""
    from .packing import Packing
    if not isinstance(pk, Packing):
        raise TypeError(f"{fn}: 'packing' must be a Packing (from pack), got {type(pk).__name__}")
    c.float_array(fn, "rows", rows, ndim=2)
    shape(fn, "rows", rows, (pk.tokens, rows.shape[1]), "(T, d) with T the packing's tokens")
