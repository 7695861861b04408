"""The compositions of the fused inference kernels, written once over a backend's primitives:
linear + activation, the two-layer MLP and the BERT post-LN transformer layer.

A backend package (``minifuse.kernels.cpu``, ``minifuse.kernels.cuda``) provides the primitives
(`linear`: GEMM + bias + activation; `apply_bias_glu`; `apply_residual_layer_norm`;
`attend_packed`; `mask_add`) and its `CHECKS`; these functions validate once, allocate with the
backend's array module and call them. Each GEMM writes straight into its buffer, every
elementwise step rides on a kernel that already sweeps that buffer, and buffers are reused where
lifetimes allow: the transformer layer allocates qkv (N, 3d), context (N, d), one projection
buffer (N, d) used twice, h (N, d), the FFN hidden (N, F) and the result. No scores matrix (with
the 'loop' method), no bias-added copy, no activation temporary, no transposed heads.
"""
import functools

from . import validate
from .activations import GATE_OF
from .checks import flat_rows, rows
from .layout import head_scale


def linear_act(B, x, weight, bias, activation, out=None):
    """act(x @ weight.T + bias): x (..., K), weight (M, K), bias (M,) or None -> (..., M).
    A non-contiguous x is copied to a contiguous one first (the GEMM needs a plain 2-D view)."""
    fn = "linear_act"
    bias, out = validate.linear_act(B.CHECKS, fn, x, weight, bias, activation, out)
    xp = B.CHECKS.module_of(fn, "x", x)
    B.linear(rows(xp, x, x.shape[-1]), weight, bias, activation, flat_rows(out, weight.shape[0]))
    return out


def mlp(B, x, w1, b1, w2, b2, activation):
    """layer2(act(layer1(x))): x (..., C), w1 (H or 2H, C), w2 (Cout, H), biases or None.

    activation: a table activation, or gated 'glu' / 'swiglu', where layer1 gives 2H features
    and out = layer2(gate(a) * b) with a = the FIRST half (the gate).
    """
    fn = "mlp"
    b1, b2 = validate.mlp(B.CHECKS, fn, x, w1, b1, w2, b2, activation)
    xp = B.CHECKS.module_of(fn, "x", x)
    x2 = rows(xp, x, x.shape[-1])
    n, cout = x2.shape[0], w2.shape[0]
    y = xp.empty((n, w1.shape[0]), x.dtype)
    if activation in GATE_OF:
        hidden = B.apply_bias_glu(B.linear(x2, w1, None, "none", y), b1, GATE_OF[activation],
                                  xp.empty((n, w2.shape[1]), x.dtype))
    else:
        hidden = B.linear(x2, w1, b1, activation, y)
    out = xp.empty(tuple(x.shape[:-1]) + (cout,), x.dtype)
    B.linear(hidden, w2, b2, "none", flat_rows(out, cout))
    return out


def transformer_layer(B, x, weights, key_mask, num_heads, eps, activation="gelu", attention_method="loop"):
    """BERT post-LN encoder layer forward (eval: no dropout), `weights` a LayerWeights:

        qkv = x @ qkv_w.T + qkv_b                  (rows of qkv_w: [Q; K; V])
        ctx = attention(qkv, key_mask, num_heads, 1/sqrt(d/num_heads), method=attention_method)
        h   = LayerNorm1(x + ctx @ out_w.T + out_b)
        out = LayerNorm2(h + act(h @ fc1_w.T + fc1_b) @ fc2_w.T + fc2_b)

    x (B, S, d); key_mask (B, S) 1 keep / 0 pad or None; activation 'gelu' = exact erf;
    attention_method 'loop' or 'bmm' (a backend with one implementation takes both).
    """
    fn = "transformer_layer"
    w = validate.transformer_layer(B.CHECKS, fn, x, weights, num_heads, eps, activation, attention_method)
    xp = B.CHECKS.module_of(fn, "x", x)
    nb, s, d = x.shape
    madd = B.mask_add(fn, key_mask, nb, s, ("x", x))

    n = nb * s
    x2 = rows(xp, x, d)
    qkv = B.linear(x2, w.qkv_w, w.qkv_b, "none", xp.empty((n, 3 * d), x.dtype))
    ctx = B.attend_packed(qkv.reshape(nb, s, 3 * d), madd, key_mask is not None, num_heads,
                          head_scale(d // num_heads), attention_method, xp.empty((nb, s, d), x.dtype))
    proj = B.linear(ctx.reshape(n, d), w.out_w, None, "none", xp.empty((n, d), x.dtype))
    h = xp.empty((n, d), x.dtype)
    B.apply_residual_layer_norm(x2, proj, w.out_b, w.ln1_g, w.ln1_b, eps, h)     # out_b folded in here
    hidden = B.linear(h, w.fc1_w, w.fc1_b, activation, xp.empty((n, w.fc1_w.shape[0]), x.dtype))
    B.linear(hidden, w.fc2_w, None, "none", proj)                                # proj buffer reused
    out = xp.empty((nb, s, d), x.dtype)
    B.apply_residual_layer_norm(h, proj, w.fc2_b, w.ln2_g, w.ln2_b, eps, out.reshape(n, d))
    return out


def bind(backend):
    """(linear_act, mlp, transformer_layer) for the backend package `backend`: the functions above
    with it as their first argument (a partial: no extra Python frame per call), what the package
    exports under these names."""
    def entry(f):
        call = functools.partial(f, backend)
        call.__doc__, call.__name__, call.__module__ = f.__doc__, f.__name__, backend.__name__
        return call
    return entry(linear_act), entry(mlp), entry(transformer_layer)
