"""Graph capture and fusion: structure (which nodes exist after each pass) and numbers
(compiled == eager; un-fusing is exact)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
import minifuse.nn.functional as F
from minifuse import graph as G


def eager(model, *inputs):
    with mf.no_grad(), nn.fusion(False):
        return model(*inputs)


def encoder(layers, d=16, heads=2, ff=24):
    return nn.TransformerEncoder(dict(d_model=d, num_heads=heads, intermediate_size=ff), layers)


def batch(b=2, s=5, d=16, dtype=mf.float32):
    x = mf.randn(b, s, d, dtype=dtype)
    mask = mf.ones(b, s, dtype=mf.int64)
    mask.data[:1, s // 2 + 1:] = 0
    return x, mask


@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_collapses_to_one_node_per_layer(layers):
    mf.manual_seed(0)
    model = encoder(layers)
    x, mask = batch()
    g = G.fuse(G.trace(model, x, mask))
    assert g.ops() == ["FusedTransformerLayer"] * layers
    assert [len(n.inputs) for n in g.nodes] == [14] * layers
    assert g.report == []
    np.testing.assert_allclose(G.execute(g, [x, mask]).numpy(), eager(model, x, mask).numpy(), rtol=1e-4, atol=1e-5)


def test_node_counts_after_each_pass():
    mf.manual_seed(1)
    model = encoder(1)
    x, mask = batch()
    g = G.trace(model, x, mask)
    assert g.count("MatMul") == 6 and g.count("LayerNorm") == 2 and g.count("Softmax") == 1
    passes = []
    expected = {"FuseMatMulBiasAct": {"FusedMatMulBiasAct": 4, "MatMul": 2},
                "FuseResidualLN": {"FusedResidualLN": 2, "LayerNorm": 0},
                "FuseAttentionBlock": {"FusedAttentionBlock": 1, "Softmax": 0, "FusedMatMulBiasAct": 2},
                "FuseTransformerLayer": {"FusedTransformerLayer": 1, "FusedAttentionBlock": 0,
                                         "FusedResidualLN": 0}}
    for p in (G.FuseMatMulBiasAct(), G.FuseResidualLN(), G.FuseAttentionBlock(), G.FuseTransformerLayer()):
        passes.append(p)
        fused = G.fuse(g, backend="cpu", passes=list(passes))
        for op, n in expected[p.name].items():
            assert fused.count(op) == n, (p.name, op, fused.ops())


@pytest.mark.parametrize("activation,fused_ops", [
    ("relu", ["FusedMatMulBiasAct", "FusedMatMulBiasAct"]),
    ("gelu", ["FusedMatMulBiasAct", "FusedMatMulBiasAct"]),
    ("silu", ["FusedMatMulBiasAct", "FusedMatMulBiasAct"]),
    ("swiglu", ["FusedBiasSwiGLU", "FusedMatMulBiasAct"]),
    ("glu", ["FusedBiasSwiGLU", "FusedMatMulBiasAct"]),
])
def test_mlp_fuses_each_activation(activation, fused_ops):
    mf.manual_seed(2)
    model = nn.MLP(12, activation, bias=True)
    x = mf.randn(2, 3, 12)
    g = G.fuse(G.trace(model, x))
    assert g.ops() == fused_ops
    acts = [n.attrs.get("activation") for n in g.nodes]
    if activation in ("relu", "gelu", "silu"):
        assert acts == [activation, "none"]
    np.testing.assert_allclose(G.execute(g, [x]).numpy(), eager(model, x).numpy(), rtol=1e-5, atol=1e-6)


def test_fused_linear_tanh_gelu_and_no_bias():
    mf.manual_seed(3)
    model = nn.Sequential(nn.FusedLinear(8, 6, "gelu", bias=False), nn.Linear(6, 4))
    x = mf.randn(5, 8)
    g = G.fuse(G.trace(model, x))
    assert g.ops() == ["FusedMatMulBiasAct", "FusedMatMulBiasAct"]
    assert [(n.attrs["activation"], n.attrs["has_bias"]) for n in g.nodes] == [("gelu_tanh", False), ("none", True)]
    np.testing.assert_allclose(G.execute(g, [x]).numpy(), eager(model, x).numpy(), rtol=1e-5, atol=1e-6)


def test_attention_block_alone():
    mf.manual_seed(4)
    model = nn.MultiHeadAttention(16, 4)
    x, mask = batch()
    g = G.fuse(G.trace(model, x, mask))
    assert g.ops() == ["FusedAttentionBlock"]
    np.testing.assert_allclose(G.execute(g, [x, mask]).numpy(), eager(model, x, mask).numpy(), rtol=1e-5, atol=1e-6)
    g2 = G.fuse(G.trace(model, x))  # no mask
    assert g2.ops() == ["FusedAttentionBlock"] and not g2.nodes[0].attrs["has_mask"]
    np.testing.assert_allclose(G.execute(g2, [x]).numpy(), eager(model, x).numpy(), rtol=1e-5, atol=1e-6)


class TwiceUsed(nn.Module):
    """A matmul whose output is used twice must not fuse."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(mf.randn(4, 3))
        self.b = nn.Parameter(mf.randn(4))

    def forward(self, x):
        y = x @ self.w.T
        return (y + self.b).relu() + y.tanh()


class ResidualOut(nn.Module):
    """A residual sum that is also a graph output must not fuse into the LayerNorm."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(3)

    def forward(self, x, r):
        s = x + r
        return s, self.ln(s)


class OddBias(nn.Module):
    """A rank-2 'bias' and an unsupported activation are reported."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(mf.randn(4, 3))

    def forward(self, x, other):
        return (x @ self.w.T + other).tanh()


def test_patterns_that_must_not_fuse_are_reported():
    mf.manual_seed(5)
    x = mf.randn(2, 3)
    g = G.fuse(G.trace(TwiceUsed(), x))
    assert "MatMul" in g.ops() and "FusedMatMulBiasAct" not in g.ops()
    assert any("2 consumers" in reason for _, _, reason in g.report)

    g = G.fuse(G.trace(ResidualOut(), x, mf.randn(2, 3)))
    assert g.count("LayerNorm") == 1 and g.count("FusedResidualLN") == 0
    assert any("graph output" in reason for _, _, reason in g.report)

    g = G.fuse(G.trace(OddBias(), x, mf.randn(2, 4)))
    reasons = " | ".join(r for _, _, r in g.report)
    assert "bias rank 2 > 1" in reasons and "no bias and no activation" in reasons
    assert "FusionReport" not in G.format_report(g) and "did not fuse" in G.format_report(g)


class _Act(nn.Module):
    """The taped activation ``name`` (``F.activation``: its op class, or the generic Activation op)."""

    def __init__(self, name):
        super().__init__()
        self.fn = F.activation(name)

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_every_activation_of_the_table_fuses_after_a_linear(backend):
    """Each activation of kernels/activations.py, traced from its taped op, becomes the fused
    node's activation, and the fused graph computes the eager function."""
    if backend not in mf.kernels.registry.available():
        pytest.skip("no CUDA kernels here (numba-cuda, a GPU or NUMBA_ENABLE_CUDASIM=1)")
    mf.manual_seed(6)
    device = "cuda" if backend == "cuda" and mf.cuda_available() else "cpu"   # else the simulator's NumPy arrays
    x = (mf.randn(2, 3) * 3).to(device)
    for name in [n for n in mf.kernels.activations.NAMES if n != "none"]:
        act = _Act(name)
        model = nn.Sequential(nn.Linear(3, 4), act).to(device)
        g = G.fuse(G.trace(model, x), backend=backend)
        assert g.ops() == ["FusedMatMulBiasAct"] and g.nodes[0].attrs["activation"] == name
        np.testing.assert_allclose(G.execute(g, [x], backend).numpy(), eager(model, x).numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_unfuse_round_trip_is_exact():
    mf.manual_seed(6)
    model = encoder(2)
    x, mask = batch()
    traced = G.trace(model, x, mask)
    back = G.fuse(traced, backend="reference")   # fuses everything, then un-fuses everything
    assert back.ops() == traced.ops()
    np.testing.assert_array_equal(G.execute(back, [x, mask]).numpy(), G.execute(traced, [x, mask]).numpy())
    np.testing.assert_array_equal(G.execute(traced, [x, mask]).numpy(), eager(model, x, mask).numpy())


def test_backend_with_some_fused_ops_gets_the_rest_unfused():
    partial = G.Backend("linear-only", {"FusedMatMulBiasAct": G.get_backend("cpu").impls["FusedMatMulBiasAct"]})
    mf.manual_seed(7)
    model = encoder(1)
    x, mask = batch()
    g = G.fuse(G.trace(model, x, mask), backend=partial)
    assert g.count("FusedTransformerLayer") == 0 and g.count("FusedAttentionBlock") == 0
    assert g.count("FusedMatMulBiasAct") == 4 and g.count("LayerNorm") == 2
    np.testing.assert_allclose(G.execute(g, [x, mask], backend=partial).numpy(), eager(model, x, mask).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_pass_order_is_checked():
    g = G.trace(encoder(1), *batch())
    with pytest.raises(ValueError, match="FuseTransformerLayer must run after FuseMatMulBiasAct"):
        G.fuse(g, passes=[G.FuseTransformerLayer(), G.FuseMatMulBiasAct()])
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        G.fuse(g, backend="tpu")


def test_attention_threshold():
    model = encoder(1)
    x, mask = batch(b=2, s=5)
    g = G.trace(model, x, mask)
    nn.set_attention_threshold(8)     # batch*seq = 10 > 8: batched products
    try:
        large = G.fuse(g)
        nn.set_attention_threshold(10)
        small = G.fuse(g)
    finally:
        nn.set_attention_threshold(None)
    assert large.ops() == ["FusedTransformerLayer"]
    assert [n.attrs["method"] for n in large.nodes if n.op == "FusedTransformerLayer"] == ["bmm"]
    assert [n.attrs["method"] for n in small.nodes if n.op == "FusedTransformerLayer"] == ["loop"]
    want = eager(model, x, mask).numpy()
    for fused in (large, small):
        np.testing.assert_allclose(G.execute(fused, [x, mask]).numpy(), want, rtol=1e-5, atol=1e-6)


def test_report_env_var_prints(monkeypatch, capsys):
    monkeypatch.setenv("MINIFUSE_FUSION_REPORT", "1")
    G.fuse(G.trace(TwiceUsed(), mf.randn(2, 3)))
    assert "consumers" in capsys.readouterr().out


def test_compile_retraces_for_new_shapes_and_matches_eager():
    mf.manual_seed(8)
    model = encoder(2)
    fast = mf.compile(model, *batch(s=5))
    for s in (5, 7, 5):
        x, mask = batch(s=s)
        np.testing.assert_allclose(fast(x, mask).numpy(), eager(model, x, mask).numpy(), rtol=1e-4, atol=1e-5)
    assert len(fast.graphs) == 2
    with pytest.raises(ValueError, match="traced for"):
        G.execute(next(iter(fast.graphs.values())), list(batch(s=9)))


def test_traced_graph_prints_and_exports_dot():
    g = G.trace(nn.MLP(4, "gelu", bias=True), mf.randn(2, 4))
    text = str(g)
    assert "Gelu" in text and "layer1.weight" in text and text.startswith("graph(%")
    dot = G.fuse(g).to_dot()
    assert dot.startswith("digraph") and "FusedMatMulBiasAct" in dot


def test_trace_records_through_the_op_layer_and_keeps_inputs_live():
    """Changing the mask or input_ids after tracing changes the result: they are inputs, not constants."""
    mf.manual_seed(9)
    model = encoder(1)
    x, mask = batch()
    g = G.fuse(G.trace(model, x, mask), backend="reference")
    mask2 = mf.ones(*mask.shape, dtype=mf.int64)
    np.testing.assert_allclose(G.execute(g, [x, mask2]).numpy(), eager(model, x, mask2).numpy(), rtol=1e-6)
    emb = nn.Embedding(10, 4)
    ge = G.trace(emb, mf.tensor([1, 2]))
    np.testing.assert_array_equal(G.execute(ge, [mf.tensor([3, 4])]).numpy(), emb.weight.detach().numpy()[[3, 4]])


@settings(max_examples=10, deadline=None)
@given(b=st.integers(0, 3), s=st.integers(0, 6), heads=st.sampled_from([1, 2, 4]), layers=st.integers(1, 2),
       dtype=st.sampled_from([mf.float32, mf.float64]), seed=st.integers(0, 1000))
def test_compiled_equals_eager_on_random_encoders(b, s, heads, layers, dtype, seed):
    mf.manual_seed(seed)
    model = encoder(layers, d=8, heads=heads, ff=12).to(dtype)
    x, mask = batch(b, s, 8, dtype)
    tol = 1e-4 if dtype == mf.float32 else 1e-10
    out = mf.compile(model, x, mask)(x, mask)
    np.testing.assert_allclose(out.numpy(), eager(model, x, mask).numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("d, ff", [(0, 4), (4, 0), (0, 0), (2, 1)])
def test_compiled_equals_eager_with_size_0_features(d, ff):
    """d_model 0 or no FFN width: the fused graph (one FusedTransformerLayer per layer) computes
    what the layers compute."""
    mf.manual_seed(1)
    model = encoder(2, d=d, heads=2, ff=ff)
    x, mask = batch(2, 3, d)
    fast = mf.compile(model, x, mask)
    assert fast.graph_for(x, mask).ops() == ["FusedTransformerLayer"] * 2
    np.testing.assert_allclose(fast(x, mask).numpy(), eager(model, x, mask).numpy(), rtol=1e-5, atol=1e-6)
