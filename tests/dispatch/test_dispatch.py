"""Layers take the fused kernels exactly when no gradient is recorded, and both paths compute the
same function (float32 1e-5, float64 1e-10) on random shapes, odd sizes, empty batches, non-contiguous
inputs, float32 and float64, with NaN/Inf propagating."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
from minifuse.kernels import cpu

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def both_paths(layer, *inputs):
    with mf.no_grad():
        fused = layer(*inputs)
        with nn.fusion(False):
            unfused = layer(*inputs)
    return fused.numpy(), unfused.numpy()


def assert_close(a, b, rtol, scale_atol=True):
    atol = rtol * max(1.0, float(np.nanmax(np.abs(b)))) if b.size and scale_atol else rtol
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture
def spy(monkeypatch):
    """Counts calls into the CPU kernels, to prove which path ran."""
    calls = []
    for name in ("linear_act", "mlp", "residual_layer_norm", "attention_packed", "transformer_layer"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls


def test_dispatch_rule(spy, monkeypatch):
    layer = nn.FusedLinear(4, 3, "gelu")
    x = mf.randn(2, 4)
    y = layer(x)                      # parameters require grad and grad mode is on: taped
    assert y.grad_fn is not None and spy == []
    with mf.no_grad():
        y = layer(x)
    assert y.grad_fn is None and spy == ["linear_act"]
    layer.requires_grad_(False) if hasattr(layer, "requires_grad_") else [p.requires_grad_(False) for p in layer.parameters()]
    spy.clear()
    layer(x)                          # grad mode on, but nothing requires grad: fused
    assert spy == ["linear_act"]
    spy.clear()
    layer(mf.randn(2, 4, requires_grad=True))  # an input that requires grad: taped
    assert spy == []
    nn.set_fusion_enabled(False)
    try:
        with mf.no_grad():
            layer(x)
        assert spy == []
    finally:
        nn.set_fusion_enabled(None)


def test_each_layer_takes_its_kernel(spy):
    x3, mask = mf.randn(2, 3, 8), mf.tensor([[1, 1, 0], [1, 1, 1]])
    with mf.no_grad(), nn.packing(False):    # the padded kernels (packed: tests/nn/test_nn_packing.py)
        nn.Linear(8, 4, bias=False)(x3)
        nn.LayerNorm(8)(x3)
        nn.MLP(8, "swiglu")(x3)
        nn.MultiHeadAttention(8, 2)(x3, mask)
        nn.TransformerLayer(8, 2, 16)(x3, mask)
    assert spy == ["linear_act", "residual_layer_norm", "mlp", "linear_act", "attention_packed", "linear_act",
                   "transformer_layer"]


@pytest.fixture
def threshold():
    """Sets the attention threshold for one test (this thread), then restores the default."""
    yield nn.set_attention_threshold
    nn.set_attention_threshold(None)


def test_settings_defaults_come_from_the_environment():
    """MINIFUSE_DISABLE_FUSION and MINIFUSE_FUSE_ATTN_THRESHOLD set the defaults, read once at
    import; the setters change them per thread and None restores the default."""
    import subprocess
    import sys
    code = ("import minifuse.nn as nn; print(nn.fusion_enabled(), nn.attention_threshold()); "
            "nn.set_fusion_enabled(True); nn.set_attention_threshold(3); "
            "print(nn.fusion_enabled(), nn.attention_threshold()); "
            "nn.set_fusion_enabled(None); nn.set_attention_threshold(None); "
            "print(nn.fusion_enabled(), nn.attention_threshold())")
    env = dict(os.environ, MINIFUSE_DISABLE_FUSION="1", MINIFUSE_FUSE_ATTN_THRESHOLD="7")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["False 7", "True 3", "False 7"]


def test_settings_are_per_thread(threshold):
    import threading
    nn.set_fusion_enabled(False)
    threshold(5)
    seen = []
    t = threading.Thread(target=lambda: seen.append((nn.fusion_enabled(), nn.attention_threshold())))
    t.start()
    t.join()
    nn.set_fusion_enabled(None)
    assert seen == [(True, -1)] and nn.attention_threshold() == 5


def test_large_inputs_run_attention_as_batched_products(monkeypatch, threshold):
    threshold(4)
    methods = []
    for name in ("attention_packed", "transformer_layer"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _real=real, **k: methods.append(
            k.get("method", a[6] if len(a) > 6 else None)) or _real(*a, **k))
    x, mask = mf.randn(2, 3, 8), mf.tensor([[1, 1, 0], [1, 1, 1]])
    layer, attn = nn.TransformerLayer(8, 2, 16), nn.MultiHeadAttention(8, 2)
    with mf.no_grad(), nn.packing(False):
        layer(x, mask)
        attn(x, mask)
        layer(x[:1, :2], mask[:1, :2])  # batch * seq = 2 <= 4: the loop kernel
        attn(x[:1, :2], mask[:1, :2])
    assert methods == ["bmm", "bmm", "loop", "loop"]


def test_packed_attention_takes_the_loop_kernel_at_head_dim_32(monkeypatch, threshold):
    """Packed rows: the loop kernel for heads of 32 (faster there at every length measured), the
    threshold's choice for other head dims; eager layers, encoders and the graph pass alike."""
    threshold(-1)                               # the default: padded attention as batched products
    monkeypatch.setattr(nn.dispatch, "get_num_threads", lambda: 2)     # (the thread rule: below)
    assert nn.dispatch.packed_attention_method(32, "bmm") == "loop"
    assert nn.dispatch.packed_attention_method(16, "bmm") == "bmm"
    assert nn.dispatch.packed_attention_method(64, "loop") == "loop"
    methods = []
    real = cpu.attend_varlen
    monkeypatch.setattr(cpu, "attend_varlen", lambda *a: methods.append(a[4]) or real(*a))
    mask = mf.tensor([[1, 1, 0], [1, 1, 1]])
    with mf.no_grad():
        for d, heads in ((64, 2), (32, 2)):     # head dims 32 and 16
            x = mf.randn(2, 3, d)
            nn.MultiHeadAttention(d, heads)(x, mask)
            nn.TransformerEncoder(nn.TransformerLayer(d, heads, 2 * d), 1)(x, mask)
    assert methods == ["loop", "loop", "bmm", "bmm"]


@pytest.mark.parametrize("threads, batch, expected", [
    (1, 2, "bmm"), (2, 2, "bmm"), (2, 100, "bmm"),       # 2 threads or fewer: the products
    (4, 31, "loop"), (4, 32, "bmm"), (16, 64, "loop"), (16, 128, "bmm")])
def test_packed_attention_takes_the_loop_kernel_when_the_sequences_are_few_for_the_threads(
        monkeypatch, threads, batch, expected):
    monkeypatch.setattr(nn.dispatch, "get_num_threads", lambda: threads)
    assert nn.dispatch.PACKED_BMM_SEQUENCES_PER_THREAD == 8
    assert nn.dispatch.packed_attention_method(64, "bmm", batch) == expected
    assert nn.dispatch.packed_attention_method(64, "loop", batch) == "loop"
    assert nn.dispatch.packed_attention_method(64, "bmm") == "bmm"           # no batch: no thread rule
    methods = []
    real = cpu.attend_varlen
    monkeypatch.setattr(cpu, "attend_varlen", lambda *a: methods.append(a[4]) or real(*a))
    mask = mf.tensor([[1] * 3] + [[1, 1, 0]] * (batch - 1))
    with mf.no_grad():
        nn.MultiHeadAttention(8, 2)(mf.randn(batch, 3, 8), mask)          # head dim 4
    assert methods == [expected]


def test_training_mode_dropout_is_never_fused(spy):
    layer = nn.TransformerLayer(8, 2, 16, dropout=0.1)
    with mf.no_grad():
        layer(mf.randn(1, 2, 8))
    assert "transformer_layer" not in spy
    layer.eval()
    with mf.no_grad():
        layer(mf.randn(1, 2, 8))
    assert "transformer_layer" in spy


def test_mlp_unfused_backend_never_fuses(spy):
    with mf.no_grad():
        nn.MLP(8, "gelu", backend="unfused")(mf.randn(2, 8))
    assert "mlp" not in spy


shapes = st.tuples(st.integers(0, 3), st.integers(1, 5))  # (batch incl. empty, seq incl. 1)
dtypes = st.sampled_from([np.float32, np.float64])


def _x(lead, width, dtype, noncontig, seed):
    rng = np.random.default_rng(seed)
    if noncontig:  # every other column of a wider array: the last dim is strided
        a = rng.standard_normal(tuple(lead) + (2 * width,)).astype(dtype)[..., ::2]
    else:
        a = rng.standard_normal(tuple(lead) + (width,)).astype(dtype)
    return mf.from_numpy(a)


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(st.integers(0, 4), min_size=1, max_size=3), din=st.integers(1, 9), dout=st.integers(1, 9),
       act=st.sampled_from(["relu", "gelu", "silu"]), approx=st.sampled_from(["tanh", "none"]),
       bias=st.booleans(), dtype=dtypes, noncontig=st.booleans(), seed=st.integers(0, 999))
def test_fused_linear_paths_agree(lead, din, dout, act, approx, bias, dtype, noncontig, seed):
    mf.manual_seed(seed)
    layer = nn.FusedLinear(din, dout, act, bias=bias, approximate=approx).to(dtype)
    a, b = both_paths(layer, _x(lead, din, dtype, noncontig, seed))
    assert a.shape == tuple(lead) + (dout,)
    assert_close(a, b, TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(st.integers(0, 3), min_size=1, max_size=3), dim=st.integers(1, 7),
       act=st.sampled_from(["relu", "gelu", "silu", "glu", "swiglu"]), bias=st.booleans(), dtype=dtypes,
       noncontig=st.booleans(), seed=st.integers(0, 999))
def test_mlp_paths_agree(lead, dim, act, bias, dtype, noncontig, seed):
    mf.manual_seed(seed)
    layer = nn.MLP(dim, act, bias=bias, expansion_factor=1.5).to(dtype)
    a, b = both_paths(layer, _x(lead, dim, dtype, noncontig, seed))
    assert_close(a, b, TOL[dtype])


@settings(max_examples=30, deadline=None)
@given(bs=shapes, heads=st.sampled_from([1, 2, 3]), dh=st.integers(1, 4), masked=st.booleans(), dtype=dtypes,
       noncontig=st.booleans(), seed=st.integers(0, 999), threshold=st.sampled_from(["0", "1"]))
def test_attention_and_layer_paths_agree(bs, heads, dh, masked, dtype, noncontig, seed, threshold):
    # threshold 0: the loop kernel always; 1: method 'bmm' (batched BLAS + fused softmax) for batch * seq > 1
    nn.set_attention_threshold(int(threshold))
    try:
        _attention_and_layer_paths_agree(bs, heads, dh, masked, dtype, noncontig, seed)
    finally:
        nn.set_attention_threshold(None)


def _attention_and_layer_paths_agree(bs, heads, dh, masked, dtype, noncontig, seed):
    b, s = bs
    d = heads * dh
    mf.manual_seed(seed)
    x = _x((b, s), d, dtype, noncontig, seed)
    mask = None
    if masked:
        m = np.ones((b, s), np.int64)
        m[:, s - 1:] = 0 if s > 1 else 1  # pad the last key (keep one real key per row)
        mask = mf.tensor(m)
    attn = nn.MultiHeadAttention(d, heads).to(dtype)
    assert_close(*both_paths(attn, x, mask), TOL[dtype])
    layer = nn.TransformerLayer(d, heads, 2 * d + 1).to(dtype)
    a, u = both_paths(layer, x, mask)
    assert_close(a, u, 1e-4 if dtype == np.float32 else 1e-10)
    ln = nn.LayerNorm(d).to(dtype)
    assert_close(*both_paths(ln, x), TOL[dtype])


def test_4d_input_and_size_one():
    mf.manual_seed(0)
    x = mf.randn(2, 3, 1, 5)
    for layer in (nn.Linear(5, 1), nn.MLP(5, "swiglu", expansion_factor=0.2), nn.LayerNorm(5)):
        a, b = both_paths(layer, x)
        assert_close(a, b, 1e-5)


def test_nan_and_inf_propagate_like_the_unfused_path():
    mf.manual_seed(1)
    x = mf.randn(3, 4)
    x.data[0, 1] = np.nan
    x.data[1, 2] = np.inf
    for layer in (nn.FusedLinear(4, 3, "gelu"), nn.FusedLinear(4, 3, "relu"), nn.MLP(4, "swiglu"), nn.LayerNorm(4)):
        a, b = both_paths(layer, x)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-5, atol=1e-6)


def test_bad_input_raises_before_the_kernel():
    with mf.no_grad():
        with pytest.raises(ValueError, match="in_features|last dim"):
            nn.Linear(4, 3)(mf.randn(2, 5))
        with pytest.raises(TypeError, match="dtype|float"):
            nn.Linear(4, 3)(mf.randn(2, 4, dtype=mf.float64))
        with pytest.raises(ValueError, match="attention_mask"):
            nn.TransformerLayer(4, 2, 8)(mf.randn(2, 3, 4), mf.ones(2, 4))


def test_bad_settings_are_refused_with_the_setting_named():
    for bad in ("abc", 1.5, True):
        with pytest.raises(ValueError, match="set_attention_threshold: the attention threshold must be an integer"):
            nn.set_attention_threshold(bad)
    assert nn.attention_threshold() == -1                  # unchanged by the refused calls
    import subprocess
    import sys
    env = dict(os.environ, MINIFUSE_FUSE_ATTN_THRESHOLD="many")
    run = subprocess.run([sys.executable, "-c", "import minifuse.nn"], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "MINIFUSE_FUSE_ATTN_THRESHOLD: the attention threshold must be an integer" in run.stderr
