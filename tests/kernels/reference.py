"""Plain NumPy float64 references for the fused kernels of every backend, forward and training
backward, written from the formulas alone (no code shared with minifuse.kernels), plus the
comparison helper and array factories."""
import numpy as np
from scipy import special

ACTS = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "gelu": lambda v: 0.5 * v * (1 + special.erf(v / np.sqrt(2))),
    "gelu_tanh": lambda v: 0.5 * v * (1 + np.tanh(0.7978845608028654 * (v + 0.044715 * v ** 3))),
    "silu": lambda v: v * special.expit(v),
    "sigmoid": special.expit,
    "tanh": np.tanh,
}


# The derivatives, from the formulas (Phi, phi: the normal CDF and density).
SLOPES = {
    "none": lambda v: np.ones_like(v),
    "relu": lambda v: (v > 0).astype(np.float64),
    "gelu": lambda v: 0.5 * (1 + special.erf(v / np.sqrt(2))) + v * np.exp(-v * v / 2) / np.sqrt(2 * np.pi),
    "gelu_tanh": lambda v: _gelu_tanh_slope(v),
    "silu": lambda v: special.expit(v) * (1 + v * (1 - special.expit(v))),
    "sigmoid": lambda v: special.expit(v) * (1 - special.expit(v)),
    "tanh": lambda v: 1 - np.tanh(v) ** 2,
}


def _gelu_tanh_slope(v):
    c0, c1 = 0.7978845608028654, 0.044715
    t = np.tanh(c0 * (v + c1 * v ** 3))
    return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c0 * (1 + 3 * c1 * v * v)


def finfo_min(dtype):
    """finfo(dtype).min, what the unfused path adds at padded keys (NumPy's finfo refuses
    ml_dtypes' bfloat16; ml_dtypes' has it)."""
    if np.dtype(dtype).name == "bfloat16":
        import ml_dtypes
        return float(ml_dtypes.finfo(dtype).min)
    return float(np.finfo(dtype).min)


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


def bias_act(y, bias, act):
    v = f64(y) + (0 if bias is None else f64(bias))
    with np.errstate(all="ignore"):
        return ACTS[act](v)


def linear_act(x, w, b, act):
    return bias_act(f64(x) @ f64(w).T, b, act)


def bias_glu(y, bias, gate):
    v = f64(y) + (0 if bias is None else f64(bias))
    a, b = np.split(v, 2, axis=-1)
    with np.errstate(all="ignore"):
        return ACTS[gate](a) * b


def layer_norm(x, residual, gamma, beta, eps):
    # The residual add happens in the arrays' dtype, as in the unfused path (x + residual is a
    # float32 tensor there); the normalisation is float64.
    v = f64(x if residual is None else x + residual)
    mean = v.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        var = ((v - mean) ** 2).mean(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + eps) * f64(gamma) + f64(beta)


def attention(q, k, v, key_mask, scale, dtype):
    """`dtype` is the kernel's dtype: the mask adds finfo(dtype).min, as the unfused path does."""
    s = (f64(q) @ np.swapaxes(f64(k), -1, -2)) * scale
    if key_mask is not None:
        s = s + np.where(np.asarray(key_mask) == 0, finfo_min(dtype), 0.0)[:, None, None, :]
    if s.shape[-1] == 0:                  # no keys: an empty weighted sum
        return np.zeros(s.shape[:-1] + (v.shape[-1],))
    with np.errstate(all="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ f64(v)


def heads(a, h):
    """(B, S, d) -> (B, H, S, d/H)."""
    nb, s, d = a.shape
    return a.reshape(nb, s, h, d // h).transpose(0, 2, 1, 3)


def attention_packed(qkv, key_mask, h, scale, dtype):
    d = qkv.shape[-1] // 3
    q, k, v = (heads(f64(qkv)[..., i * d:(i + 1) * d], h) for i in range(3))
    o = attention(q, k, v, key_mask, scale, dtype)
    return o.transpose(0, 2, 1, 3).reshape(qkv.shape[0], qkv.shape[1], d)


def transformer_layer(x, weights, key_mask, num_heads, eps, activation, dtype):
    """`weights`: the twelve arrays in LayerWeights order (qkv_w, qkv_b, out_w, out_b, ln1_g,
    ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b). Padded positions of the output are zeros."""
    qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b = weights
    d = x.shape[-1]
    qkv = linear_act(x, qkv_w, qkv_b, "none")
    ctx = attention_packed(qkv, key_mask, num_heads, 1 / np.sqrt(d // num_heads), dtype)
    h = layer_norm(x, linear_act(ctx, out_w, out_b, "none"), ln1_g, ln1_b, eps)
    ff = linear_act(linear_act(h, fc1_w, fc1_b, activation), fc2_w, fc2_b, "none")
    out = layer_norm(h, ff, ln2_g, ln2_b, eps)
    return out if key_mask is None else np.where((np.asarray(key_mask) != 0)[..., None], out, 0)


def mlp(x, w1, b1, w2, b2, activation):
    if activation in ("glu", "swiglu"):
        hidden = bias_glu(f64(x) @ f64(w1).T, b1, "sigmoid" if activation == "glu" else "silu")
    else:
        hidden = linear_act(x, w1, b1, activation)
    return linear_act(hidden, w2, b2, "none")


# ---- training backward ------------------------------------------------------------------------

def bias_act_backward(g, y, bias, act):
    """(dy, dbias) of out = act(y + bias): dy = g act'(y + bias), dbias = sum of dy over rows."""
    v = f64(y) + (0 if bias is None else f64(bias))
    with np.errstate(all="ignore"):
        dy = f64(g) * SLOPES[act](v)
    return dy, dy.sum(0)


def glu_backward(g, y, bias, gate, w):
    """(dy, dbias, dw) of out = gate(a) b w, [a | b] = y + bias, w (N,) per row or None."""
    v = f64(y) + (0 if bias is None else f64(bias))
    a, b = np.split(v, 2, axis=-1)
    g = f64(g)
    wc = 1.0 if w is None else f64(w)[:, None]
    with np.errstate(all="ignore"):
        dy = np.concatenate([g * wc * SLOPES[gate](a) * b, g * wc * ACTS[gate](a)], axis=-1)
        dw = (ACTS[gate](a) * b * g).sum(-1)
    return dy, dy.sum(0), dw


def layer_norm_stats(x, residual, eps):
    """(xhat, rstd) of LayerNorm(x + residual): what the training forward keeps."""
    v = f64(x if residual is None else x + residual)
    mean = v.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((v - mean) ** 2).mean(-1) + eps)
    return (v - mean) * rstd[:, None], rstd


def layer_norm_backward(g, xhat, rstd, gamma):
    """(dx, dgamma, dbeta): with gh = g gamma, dx = rstd (gh - mean(gh) - xhat mean(gh xhat))."""
    g, xhat = f64(g), f64(xhat)
    gh = g * f64(gamma)
    dx = f64(rstd)[:, None] * (gh - gh.mean(-1, keepdims=True) - xhat * (gh * xhat).mean(-1, keepdims=True))
    return dx, (g * xhat).sum(0), g.sum(0)


def additive_mask(key_mask, batch, keys, dtype):
    """(B, Sk) of 0 (keep) / finfo(dtype).min (pad), zeros for no mask."""
    if key_mask is None:
        return np.zeros((batch, keys))
    return np.where(np.asarray(key_mask) == 0, finfo_min(dtype), 0.0)


def softmax_stats(s, madd, scale):
    """(P, rowmax, rowsum) of t = s scale + madd[b] over the last axis of s (B, H, Sq, Sk)."""
    t = f64(s) * scale + madd[:, None, None, :]
    with np.errstate(all="ignore"):
        m = t.max(-1)
        e = np.exp(t - m[..., None])
        total = e.sum(-1)
        return e / total[..., None], m, total


def softmax_backward(s, dp, madd, scale, do, o):
    """(P, dS) with dS = P (dP - rowsum(dO O)) scale."""
    p, _, _ = softmax_stats(s, madd, scale)
    d = (f64(do) * f64(o)).sum(-1, keepdims=True)
    return p, p * (f64(dp) - d) * scale


RTOL = {np.float32: 1e-5, np.float64: 1e-10}


def assert_close(actual, expected, rtol):
    """Relative to the result's scale: |a - e| <= rtol * (|e| + max(1, max|e|)).

    Elementwise relative error is meaningless for outputs that cancel to ~0 (GEMM sums, LN
    outputs near the mean), so the absolute part is rtol times the array's scale. NaN and
    +-inf must sit at the same places (assert_allclose checks that).
    """
    expected = np.asarray(expected, np.float64)
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=rtol * scale)


def randn(rng, shape, dtype, contiguous=True, scale=1.0):
    """Normal values; contiguous=False returns a strided view (every other element of the last
    dim of a wider array) with the same shape."""
    if contiguous:
        return (rng.standard_normal(shape) * scale).astype(dtype)
    wide = (rng.standard_normal(tuple(shape[:-1]) + (2 * shape[-1],)) * scale).astype(dtype)
    view = wide[..., ::2]
    assert not view.flags.c_contiguous or view.size <= 1
    return view
