"""Property tests: every layer's fused paths equal its taped path on random shapes where any size
may be 0 or 1 (no batch, no tokens, no features, d_model 0, no FFN width) and on random 0/1 masks
with fully padded rows, on every kernel backend (inference), and with fused training on the CPU
(outputs and every gradient)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
from minifuse.kernels import registry
from test_nn_backends import BACKENDS, placed

SIZE = st.sampled_from([0, 1, 2, 3])
SEED = st.integers(0, 2**16)


def _mask(rng, b, s, kind):
    """None, or a (B, S) 0/1 int mask: random, or with every key of row 0 padded."""
    if kind == "none":
        return None
    m = (rng.random((b, s)) < 0.6).astype(np.int64)
    if kind == "padded_row" and b:
        m[0] = 0
    return mf.tensor(m)


def _layer(kind, d, heads, f, fout, act, fused_training=False):
    if kind == "linear":
        return nn.Linear(d, fout)
    if kind == "fused_linear":
        return nn.FusedLinear(d, fout, act, fused_training=fused_training)
    if kind == "layer_norm":
        return nn.LayerNorm(d)
    if kind == "mlp":
        return nn.MLP(max(d, 1), "swiglu" if act == "silu" else act, bias=True)
    if kind == "attention":
        return nn.MultiHeadAttention(d, heads)
    if kind == "transformer_layer":
        return nn.TransformerLayer(d, heads, f, fused_training=fused_training)
    return nn.TransformerEncoder(lambda: nn.TransformerLayer(d, heads, f, fused_training=fused_training), 2)


KINDS = ["linear", "fused_linear", "layer_norm", "mlp", "attention", "transformer_layer", "encoder"]
MASKED = ("attention", "transformer_layer", "encoder")


def _inputs(rng, kind, layer, b, s, d, mask_kind):
    width = layer.dim if kind == "mlp" else d
    x = mf.tensor(rng.standard_normal((b, s, width)).astype(np.float32))
    return (x, _mask(rng, b, s, mask_kind)) if kind in MASKED else (x,)


def _close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(b=SIZE, s=SIZE, heads=st.sampled_from([1, 2]), dh=SIZE, f=SIZE, fout=SIZE,
       act=st.sampled_from(["relu", "gelu", "silu"]), mask=st.sampled_from(["none", "random", "padded_row"]),
       seed=SEED)
def test_fused_inference_equals_taped(backend, kind, b, s, heads, dh, f, fout, act, mask, seed):
    if backend == "cuda" and b * s * max(heads, 1) > 6:
        b, s = min(b, 1), min(s, 3)     # the simulator runs a block per row: keep it to a few
    device, routed = placed(backend)
    mf.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d = heads * dh
    layer = _layer(kind, d, heads, f, fout, act).eval().to(device)
    args = [a if a is None else a.to(device) for a in _inputs(rng, kind, layer, b, s, d, mask)]
    with routed, mf.no_grad():
        fused = layer(*args)
        with nn.fusion(False):
            taped = layer(*args)
    assert fused.shape == taped.shape and fused.dtype == taped.dtype
    _close(fused.numpy(), taped.numpy(), f"{kind} on {backend}")


@pytest.mark.parametrize("kind", ["fused_linear", "transformer_layer", "encoder"])
@settings(max_examples=8, deadline=None)
@given(b=SIZE, s=SIZE, heads=st.sampled_from([1, 2]), dh=SIZE, f=SIZE, fout=SIZE,
       act=st.sampled_from(["relu", "gelu", "silu"]), mask=st.sampled_from(["none", "random", "padded_row"]),
       seed=SEED)
def test_fused_training_equals_taped(kind, b, s, heads, dh, f, fout, act, mask, seed):
    """fused_training=True: the output and the gradients of the input and of every parameter."""
    rng = np.random.default_rng(seed)
    d = heads * dh
    mf.manual_seed(seed)
    fused = _layer(kind, d, heads, f, fout, act, fused_training=True)
    taped = _layer(kind, d, heads, f, fout, act)
    taped.load_state_dict(fused.state_dict())
    args = _inputs(rng, kind, fused, b, s, d, mask)
    results = []
    for layer in (fused, taped):
        x = args[0].detach().requires_grad_()
        out = layer(x, *args[1:])
        g = mf.tensor(np.random.default_rng(seed + 1).standard_normal(out.shape).astype(np.float32))
        out.backward(g)
        grads = [x.grad] + [p.grad for p in layer.parameters()]
        results.append([out.detach().numpy()] + [np.zeros(0) if t is None else t.numpy() for t in grads])
    for i, (a, b_) in enumerate(zip(*results)):
        if a.size or b_.size:
            _close(a, b_, f"{kind}: {'output' if i == 0 else 'input' if i == 1 else 'parameter'} {i}")


def test_linear_with_no_input_features_builds_and_gives_its_bias():
    """nn.Linear(0, n) (PyTorch builds it: the weight has no elements to draw) gives the bias."""
    lin = nn.Linear(0, 4)
    assert lin.weight.shape == (4, 0) and np.all(lin.bias.detach().numpy() == 0)
    lin.bias.data[:] = [1, 2, 3, 4]
    x = mf.randn(3, 0)
    with mf.no_grad():
        np.testing.assert_array_equal(lin(x).numpy(), np.tile([1.0, 2, 3, 4], (3, 1)))
        with nn.fusion(False):
            np.testing.assert_array_equal(lin(x).numpy(), np.tile([1.0, 2, 3, 4], (3, 1)))
    assert "cpu" in registry.available()
