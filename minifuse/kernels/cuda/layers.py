"""Linear layers and whole-layer forwards on CUDA: cuBLAS GEMMs (through CuPy, written straight
into their buffers with `out=`) with the fused numba kernels around them.

Per BERT-base layer that is 4 GEMMs + 2 batched attention GEMMs (cuBLAS) and 5 numba kernels:
QKV bias add, masked softmax, residual+bias+LayerNorm, bias+GELU, residual+bias+LayerNorm.
"""
import numpy as np

from . import checks, cublaslt
from .attention import METHODS, default_scale, packed
from .elementwise import apply_bias_act, apply_bias_glu
from .mathfn import ACTIVATIONS
from .rowwise import apply_residual_layer_norm, threads_for

MLP_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "glu", "swiglu")
_GATE_OF = {"glu": "sigmoid", "swiglu": "silu"}


def gemm(xp, x2, w, out2, bias=None):
    """out2 (N, M) = x2 (N, K) @ w.T (+ bias, in the GEMM's epilogue) through cuBLASLt
    (cublaslt.py: capturable in a CUDA graph), else cuBLAS plus a bias pass; no copy of w.T."""
    if xp is not np and cublaslt.linear(x2, w, bias, out2):
        return out2
    xp.matmul(x2, w.T, out=out2)
    return apply_bias_act(out2, bias, "none")


def gemm_act(xp, x2, w, bias, activation, out2):
    """out2 = act(x2 @ w.T + bias): the bias alone goes into the GEMM's epilogue; with an
    activation, the GEMM then one bias + activation kernel (faster than cuBLASLt's GELU epilogue,
    see cublaslt.py)."""
    if activation == "none":
        return gemm(xp, x2, w, out2, bias)
    return apply_bias_act(gemm(xp, x2, w, out2), bias, activation)


def check_weight(fn, name, w, in_features, like):
    """weight (M, K) in PyTorch layout with K == in_features; returns M."""
    checks.float_array(fn, name, w, ndim=2, like=like)
    if w.shape[1] != in_features:
        raise ValueError(f"{fn}: '{name}' has shape {tuple(w.shape)}, expected (M, K) with K = {in_features}")
    return w.shape[0]


def linear_act(x, weight, bias, activation, out=None):
    """act(x @ weight.T + bias): x (..., K), weight (M, K), bias (M,) or None -> (..., M).

    The GEMM is cuBLAS writing into `out`; bias and activation are one fused pass over it.
    """
    fn = "linear_act"
    xp = checks.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    m = check_weight(fn, "weight", weight, x.shape[-1], like)
    bias = checks.vector(fn, "bias", bias, m, "(M,)", like)
    checks.choice(fn, "activation", activation, ACTIVATIONS)
    out = checks.output(fn, out, tuple(x.shape[:-1]) + (m,), like,
                        [("x", x), ("weight", weight), ("bias", bias)])
    gemm_act(xp, checks.rows(xp, x, x.shape[-1]), weight, bias, activation, out.reshape(-1, m))
    return out


def transformer_layer(x, qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b,
                      ln2_g, ln2_b, key_mask, num_heads, eps, activation="gelu", attention_method="loop"):
    """BERT post-LN encoder layer forward (eval: no dropout).

        qkv = x @ qkv_w.T + qkv_b                  (rows of qkv_w: [Q; K; V])
        ctx = attention_packed(qkv, key_mask, num_heads, 1/sqrt(d/num_heads))
        h   = LayerNorm1(x + ctx @ out_w.T + out_b)
        out = LayerNorm2(h + act(h @ fc1_w.T + fc1_b) @ fc2_w.T + fc2_b)

    x (B, S, d); qkv_w (3d, d); out_w (d, d); fc1_w (F, d); fc2_w (d, F); biases may be None;
    LayerNorm params (d,); key_mask (B, S) 1 keep / 0 pad or None; activation 'gelu' = exact erf;
    attention_method: accepted for the CPU signature (attention.METHODS), one implementation here.
    """
    fn = "transformer_layer"
    checks.choice(fn, "attention_method", attention_method, {m: m for m in METHODS})
    xp = checks.float_array(fn, "x", x, ndim=3)
    like = ("x", x)
    nb, s, d = x.shape
    if not isinstance(num_heads, (int, np.integer)) or num_heads < 1 or d % num_heads:
        raise ValueError(f"{fn}: 'num_heads' must be a positive int dividing d = {d}, got {num_heads!r}")
    f = check_weight(fn, "fc1_w", fc1_w, d, like)
    for name, a, shape, meaning in [
            ("qkv_w", qkv_w, (3 * d, d), "(3d, d)"), ("out_w", out_w, (d, d), "(d, d)"),
            ("fc2_w", fc2_w, (d, f), "(d, F)")]:
        checks.float_array(fn, name, a, like=like)
        checks.shape(fn, name, a, shape, meaning)
    qkv_b = checks.vector(fn, "qkv_b", qkv_b, 3 * d, "(3d,)", like)
    out_b = checks.vector(fn, "out_b", out_b, d, "(d,)", like)
    fc1_b = checks.vector(fn, "fc1_b", fc1_b, f, "(F,)", like)
    fc2_b = checks.vector(fn, "fc2_b", fc2_b, d, "(d,)", like)
    ln = [checks.vector(fn, name, a, d, "(d,)", like) for name, a in
          (("ln1_g", ln1_g), ("ln1_b", ln1_b), ("ln2_g", ln2_g), ("ln2_b", ln2_b))]
    if any(a is None for a in ln):
        raise TypeError(f"{fn}: the LayerNorm parameters ln1_g, ln1_b, ln2_g, ln2_b are required")
    ln1_g, ln1_b, ln2_g, ln2_b = ln
    checks.choice(fn, "activation", activation, ACTIVATIONS)
    key_mask = checks.key_mask(fn, key_mask, nb, s, like)
    threads_for(max(d, s), fn)

    n = nb * s
    x2 = checks.rows(xp, x, d)
    qkv = gemm_act(xp, x2, qkv_w, qkv_b, "none", xp.empty((n, 3 * d), x.dtype))
    ctx = packed(xp, qkv.reshape(nb, s, 3 * d), key_mask, num_heads, default_scale(d // num_heads),
                 xp.empty((nb, s, d), x.dtype))
    proj = gemm(xp, ctx.reshape(n, d), out_w, xp.empty((n, d), x.dtype))
    h = xp.empty((n, d), x.dtype)
    apply_residual_layer_norm(x2, proj, out_b, ln1_g, ln1_b, eps, h)      # out_b folded in here
    hidden = gemm_act(xp, h, fc1_w, fc1_b, activation, xp.empty((n, f), x.dtype))
    gemm(xp, hidden, fc2_w, proj)                                         # proj buffer reused
    out = xp.empty((nb, s, d), x.dtype)
    apply_residual_layer_norm(h, proj, fc2_b, ln2_g, ln2_b, eps, out.reshape(n, d))
    return out


def mlp(x, w1, b1, w2, b2, activation):
    """layer2(act(layer1(x))): x (..., C), w1 (H or 2H, C), w2 (Cout, H), biases or None.

    activation: relu, gelu (exact erf), gelu_tanh, silu, or gated glu / swiglu, where layer1
    gives 2H features and out = layer2(gate(a) * b) with a = the FIRST half (the gate).
    """
    fn = "mlp"
    xp = checks.float_array(fn, "x", x, min_ndim=1)
    like = ("x", x)
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"{fn}: 'activation' must be one of {list(MLP_ACTIVATIONS)}, got {activation!r}")
    c = x.shape[-1]
    width = check_weight(fn, "w1", w1, c, like)
    b1 = checks.vector(fn, "b1", b1, width, "(w1.shape[0],)", like)
    gated = activation in _GATE_OF
    if gated and width % 2:
        raise ValueError(f"{fn}: gated '{activation}' needs an even w1.shape[0] (2H), got {tuple(w1.shape)}")
    hid = width // 2 if gated else width
    cout = check_weight(fn, "w2", w2, hid, like)
    b2 = checks.vector(fn, "b2", b2, cout, "(Cout,)", like)

    x2 = checks.rows(xp, x, c)
    y = xp.empty((x2.shape[0], width), x.dtype)
    if gated:
        hidden = apply_bias_glu(gemm(xp, x2, w1, y), b1, _GATE_OF[activation], xp.empty((x2.shape[0], hid), x.dtype))
    else:
        hidden = gemm_act(xp, x2, w1, b1, activation, y)
    out = xp.empty(tuple(x.shape[:-1]) + (cout,), x.dtype)
    gemm_act(xp, hidden, w2, b2, "none", out.reshape(-1, cout))
    return out
