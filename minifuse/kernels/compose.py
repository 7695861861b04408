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

The packed layer (`transformer_layer_varlen`) is the same composition on the T real tokens of a
padded batch (`pack` / `unpack`; offsets in `kernels/packing.py`), with variable-length
attention (`attend_varlen`) in place of the padded one.
"""
import functools

import numpy as np

from . import packing, validate
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

    x (B, S, d); key_mask (B, S) 1 keep / 0 pad (bool or 0/1 numbers) or None: the outputs of
    padded positions are zeros (those of the packed layer, `transformer_layer_varlen`);
    activation 'gelu' = exact erf; attention_method 'loop' or 'bmm' (a backend with one
    implementation takes both).
    """
    fn = "transformer_layer"
    w = validate.transformer_layer(B.CHECKS, fn, x, weights, num_heads, eps, activation, attention_method)
    xp = B.CHECKS.module_of(fn, "x", x)
    nb, s, d = x.shape
    madd = B.mask_add(fn, key_mask, nb, s, ("x", x))

    def attend(qkv, ctx):
        B.attend_packed(qkv.reshape(nb, s, 3 * d), madd, key_mask is not None, num_heads,
                        head_scale(d // num_heads), attention_method, ctx.reshape(nb, s, d))

    out = xp.empty((nb, s, d), x.dtype)
    # padded positions are zeros, as in the packed layer: the last LayerNorm writes them so
    pad_rows = None if key_mask is None else madd.reshape(nb * s)
    _layer(B, xp, rows(xp, x, d), w, attend, eps, activation, out.reshape(nb * s, d), pad_rows)
    return out


def _layer(B, xp, x2, w, attend, eps, activation, out2, pad_rows=None):
    """The layer on rows x2 (N, d) into out2 (N, d); attend(qkv (N, 3d), ctx (N, d)) fills ctx;
    the rows where pad_rows (N,) is not 0 are zeros."""
    n, d = x2.shape
    qkv = B.linear(x2, w.qkv_w, w.qkv_b, "none", xp.empty((n, 3 * d), x2.dtype))
    ctx = xp.empty((n, d), x2.dtype)
    attend(qkv, ctx)
    proj = B.linear(ctx, w.out_w, None, "none", xp.empty((n, d), x2.dtype))
    h = xp.empty((n, d), x2.dtype)
    B.apply_residual_layer_norm(x2, proj, w.out_b, w.ln1_g, w.ln1_b, eps, h)     # out_b folded in here
    hidden = B.linear(h, w.fc1_w, w.fc1_b, activation, xp.empty((n, w.fc1_w.shape[0]), x2.dtype))
    B.linear(hidden, w.fc2_w, None, "none", proj)                                # proj buffer reused
    B.apply_residual_layer_norm(h, proj, w.fc2_b, w.ln2_g, w.ln2_b, eps, out2, pad_rows=pad_rows)
    return out2


def pack(B, x, key_mask):
    """x (B, S, d), key_mask (B, S) (bool or 0/1) -> (rows (T, d), packing): the T real tokens of
    x as rows, sequence b in rows packing.cu_seqlens[b]:cu_seqlens[b + 1] (`kernels.packing`)."""
    fn = "pack"
    B.CHECKS.float_array(fn, "x", x, ndim=3)
    xp = B.CHECKS.module_of(fn, "x", x)
    nb, s, d = x.shape
    pk = B.pack_offsets(fn, key_mask, nb, s, ("x", x))
    return B.gather_rows(rows(xp, x, d), pk.index, xp.empty((pk.tokens, d), x.dtype)), pk


def unpack(B, packed, packing):
    """rows (T, d) of `packing` -> (B, S, d) with the rows back at their positions and zeros at
    the padded ones."""
    fn = "unpack"
    validate.packed_rows(B.CHECKS, fn, packed, packing)
    xp = B.CHECKS.module_of(fn, "rows", packed)
    d = packed.shape[1]
    out = xp.zeros((packing.batch * packing.seq, d), packed.dtype)
    B.scatter_rows(rows(xp, packed, d), packing.index, out)
    return out.reshape(packing.batch, packing.seq, d)


def attention_varlen(B, qkv, cu_seqlens, num_heads, scale, out=None, method="loop"):
    """Variable-length attention on packed rows: for each sequence b, rows
    r = cu_seqlens[b]:cu_seqlens[b + 1] of qkv (T, 3d) (Wqkv rows [Q; K; V], head h in columns
    h*Dh:(h+1)*Dh of each block), out[r] = softmax(q_r k_r^T * scale) v_r per head.
    cu_seqlens (B + 1,) integers from 0 to T, non-decreasing. Returns out (T, d)."""
    fn = "attention_varlen"
    scale, out, cu = validate.attention_varlen(B.CHECKS, fn, qkv, cu_seqlens, num_heads, scale, method, out)
    xp = B.CHECKS.module_of(fn, "qkv", qkv)
    pk = packing.Packing(len(cu) - 1, 0, cu, int(np.diff(cu).max(initial=0)), None, xp.asarray(cu))
    return B.attend_varlen(qkv, pk, num_heads, scale, method, out)


def transformer_layer_varlen(B, packed, packing, weights, num_heads, eps, activation="gelu",
                             attention_method="loop"):
    """`transformer_layer` on packed rows (T, d) of `packing` (from `pack`): every token-wise step
    on the T real tokens, attention per sequence over its own tokens (`attend_varlen`). Returns
    (T, d); the real-token rows of the padded layer's output."""
    fn = "transformer_layer_varlen"
    w = validate.transformer_layer_varlen(B.CHECKS, fn, packed, packing, weights, num_heads, eps, activation,
                                          attention_method)
    xp = B.CHECKS.module_of(fn, "rows", packed)
    d = packed.shape[1]

    def attend(qkv, ctx):
        B.attend_varlen(qkv, packing, num_heads, head_scale(d // num_heads), attention_method, ctx)

    return _layer(B, xp, rows(xp, packed, d), w, attend, eps, activation, xp.empty(packed.shape, packed.dtype))


def bind(backend):
    """(linear_act, mlp, transformer_layer, pack, unpack, attention_varlen, transformer_layer_varlen) for the backend
    package `backend`: the functions above with it as their first argument (a partial: no extra
    Python frame per call), what the package exports under these names."""
    def entry(f):
        call = functools.partial(f, backend)
        call.__doc__, call.__name__, call.__module__ = f.__doc__, f.__name__, backend.__name__
        return call
    return tuple(map(entry, (linear_act, mlp, transformer_layer, pack, unpack, attention_varlen,
                          transformer_layer_varlen)))
