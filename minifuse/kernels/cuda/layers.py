"""Linear layers and whole-layer forwards on CUDA: cuBLAS GEMMs (through CuPy, written straight
into their buffers with `out=`) with the fused numba kernels around them.

Per BERT-base layer that is 4 GEMMs + 2 batched attention GEMMs (cuBLAS) and 5 numba kernels:
QKV bias add, masked softmax, residual+bias+LayerNorm, bias+GELU, residual+bias+LayerNorm.
"""
import numpy as np

from ...precision import get_float32_matmul_precision
from .. import validate
from ..validate import GATE_OF
from . import checks, cublaslt
from .attention import METHODS, default_scale, packed
from .elementwise import apply_bias_act, apply_bias_glu
from .mathfn import ACTIVATIONS
from .rowwise import apply_residual_layer_norm, threads_for
from .runtime import xp_for
from .tf32x3 import LO_FIRST, LO_MIDDLE, split3


def gemm(xp, x2, w, out2, bias=None):
    """out2 (N, M) = x2 (N, K) @ w.T (+ bias, in the GEMM's epilogue) through cuBLASLt
    (cublaslt.py: capturable in a CUDA graph), else cuBLAS plus a bias pass; no copy of w.T.
    float32 at precision 'high' or 'medium' (`minifuse.set_float32_matmul_precision`): on the
    tensor cores, 'high' as the 3xTF32 split (tf32x3.py)."""
    if xp is not np:
        precision = get_float32_matmul_precision()
        tf32 = precision != "highest" and x2.dtype == np.float32
        if tf32 and precision == "high" and cublaslt.applies(bias, out2):   # (the split copies are aligned)
            x2, w = split3(xp, x2, LO_FIRST), split3(xp, w, LO_MIDDLE)
        if cublaslt.linear(x2, w, bias, out2, tf32=tf32):
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


def linear_act(x, weight, bias, activation, out=None):
    """act(x @ weight.T + bias): x (..., K), weight (M, K), bias (M,) or None -> (..., M).

    The GEMM is cuBLAS writing into `out`; bias and activation are one fused pass over it.
    """
    fn = "linear_act"
    bias, activation, out = validate.linear_act(checks.CHECKS, fn, x, weight, bias, activation, ACTIVATIONS, out)
    xp = xp_for(fn, "x", x)
    gemm_act(xp, checks.rows(xp, x, x.shape[-1]), weight, bias, activation, out.reshape(-1, weight.shape[0]))
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
    params = validate.transformer_layer(checks.CHECKS, fn, x, num_heads, [
        qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b])
    qkv_w, qkv_b, out_w, out_b, ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b = params
    xp = xp_for(fn, "x", x)
    nb, s, d = x.shape
    f = fc1_w.shape[0]
    checks.choice(fn, "activation", activation, ACTIVATIONS)
    key_mask = checks.key_mask(fn, key_mask, nb, s, ("x", x))
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
    """layer2(act(layer1(x))) with cuBLAS GEMMs: the arguments, activations (gated glu / swiglu
    included) and errors of `minifuse.kernels.cpu.mlp` (one validation: `validate.mlp`).
    """
    b1, b2 = validate.mlp(checks.CHECKS, "mlp", x, w1, b1, w2, b2, activation)
    xp = xp_for("mlp", "x", x)
    cout = w2.shape[0]

    x2 = checks.rows(xp, x, x.shape[-1])
    y = xp.empty((x2.shape[0], w1.shape[0]), x.dtype)
    if activation in GATE_OF:
        hidden = apply_bias_glu(gemm(xp, x2, w1, y), b1, GATE_OF[activation],
                                xp.empty((x2.shape[0], w2.shape[1]), x.dtype))
    else:
        hidden = gemm_act(xp, x2, w1, b1, activation, y)
    out = xp.empty(tuple(x.shape[:-1]) + (cout,), x.dtype)
    gemm_act(xp, hidden, w2, b2, "none", out.reshape(-1, cout))
    return out
