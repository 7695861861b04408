"""Whole-layer forwards composed from the fused kernels: BERT post-LN transformer layer and MLP.

Each GEMM writes straight into its buffer (`np.matmul(..., out=)`), every elementwise step rides
on a kernel that already sweeps that buffer, and buffers are reused where lifetimes allow:
the transformer layer allocates qkv (N, 3d), context (N, d), one projection buffer (N, d) used
twice, h (N, d), the FFN hidden (N, 4d) and the result. Nothing else: no scores matrix, no
bias-added copy, no activation temporary, no transposed heads.
"""
import math

import numpy as np

from .. import validate
from ..validate import GATE_OF
from . import checks
from .attention import METHODS, _mask_add, split_heads
from .epilogue import ACTIVATIONS, apply_bias_act
from .glu import GATES, apply_bias_glu
from .layernorm import apply_residual_layer_norm
from .linear import gemm


def transformer_layer(x, qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b,
                      ln2_g, ln2_b, key_mask, num_heads, eps, activation="gelu", attention_method="loop"):
    """BERT post-LN encoder layer forward (eval: no dropout).

        qkv = x @ qkv_w.T + qkv_b                  (rows of qkv_w: [Q; K; V])
        ctx = attention_packed(qkv, key_mask, num_heads, 1/sqrt(d/num_heads), method=attention_method)
        h   = LayerNorm1(x + ctx @ out_w.T + out_b)
        out = LayerNorm2(h + act(h @ fc1_w.T + fc1_b) @ fc2_w.T + fc2_b)

    x (B, S, d); qkv_w (3d, d); out_w (d, d); fc1_w (F, d); fc2_w (d, F); biases may be None;
    LayerNorm params (d,); key_mask (B, S) 1 keep / 0 pad or None; activation 'gelu' = exact erf;
    attention_method 'loop' or 'bmm' (see `attention`).
    """
    fn = "transformer_layer"
    params = validate.transformer_layer(checks.CHECKS, fn, x, num_heads, [
        qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b])
    qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b = params
    nb, s, d = x.shape
    f = fc1_w.shape[0]
    code = checks.choice(fn, "activation", activation, ACTIVATIONS)
    attend = checks.choice(fn, "attention_method", attention_method, METHODS)
    madd = _mask_add(fn, key_mask, nb, s, x.dtype)

    n = nb * s
    x2 = checks.rows(x, d)
    qkv = gemm(x2, qkv_w, np.empty((n, 3 * d), x.dtype))
    apply_bias_act(qkv, qkv_b, 0)
    ctx = np.empty((nb, s, d), x.dtype)
    qkv3 = qkv.reshape(nb, s, 3 * d)
    q, k, v = (split_heads(qkv3, i * d, d, num_heads) for i in range(3))
    scale = x.dtype.type(1.0 / math.sqrt(d // num_heads))
    attend(q, k, v, madd, key_mask is not None, scale, split_heads(ctx, 0, d, num_heads))
    proj = gemm(ctx.reshape(n, d), out_w, np.empty((n, d), x.dtype))
    h = np.empty((n, d), x.dtype)
    apply_residual_layer_norm(x2, proj, out_b, ln1_g, ln1_b, eps, h)      # out_b folded in here
    hidden = gemm(h, fc1_w, np.empty((n, f), x.dtype))
    apply_bias_act(hidden, fc1_b, code)
    gemm(hidden, fc2_w, proj)                                             # proj buffer reused
    out = np.empty((nb, s, d), x.dtype)
    apply_residual_layer_norm(h, proj, fc2_b, ln2_g, ln2_b, eps, out.reshape(n, d))
    return out


def mlp(x, w1, b1, w2, b2, activation):
    """layer2(act(layer1(x))): x (..., C), w1 (H or 2H, C), w2 (Cout, H), biases or None.

    activation: relu, gelu (exact erf), gelu_tanh, silu, or gated glu / swiglu, where layer1
    gives 2H features and out = layer2(gate(a) * b) with a = the FIRST half (the gate).
    """
    b1, b2 = validate.mlp(checks.CHECKS, "mlp", x, w1, b1, w2, b2, activation)
    cout = w2.shape[0]

    x2 = checks.rows(x, x.shape[-1])
    y = gemm(x2, w1, np.empty((x2.shape[0], w1.shape[0]), x.dtype))
    if activation in GATE_OF:
        hidden = np.empty((x2.shape[0], w2.shape[1]), x.dtype)
        apply_bias_glu(y, b1, GATES[GATE_OF[activation]], hidden)
    else:
        hidden = y
        apply_bias_act(y, b1, ACTIVATIONS[activation])
    out = np.empty(x.shape[:-1] + (cout,), x.dtype)
    out2 = gemm(hidden, w2, out.reshape(-1, cout))
    apply_bias_act(out2, b2, 0)
    return out
