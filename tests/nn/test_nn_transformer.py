"""MultiHeadAttention, TransformerLayer (BERT post-LN) and TransformerEncoder."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
import nn_reference as ref

MASK = [[1, 1, 1, 0], [1, 1, 1, 1]]


def x64(*shape, seed=0):
    return mf.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=mf.float64, requires_grad=True)


def randomize(module, seed=0):
    """Non-trivial LayerNorm weights and biases, so the reference checks that they are used."""
    mf.manual_seed(seed)
    for name, p in module.named_parameters():
        if name.endswith(("ln1.weight", "ln2.weight")):
            nn.init.uniform_(p, 0.5, 1.5)
        elif name.endswith(("ln1.bias", "ln2.bias")):
            nn.init.normal_(p, 0, 0.5)
    return module


@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_matches_numpy(mask):
    mf.manual_seed(0)
    m = nn.MultiHeadAttention(6, 3, dtype=mf.float64)
    x = np.random.default_rng(0).standard_normal((2, 4, 6))
    got = m(mf.tensor(x), None if mask is None else mf.tensor(mask)).detach().numpy()
    np.testing.assert_allclose(got, ref.attention(x, ref.params_np(m), 3, mask), rtol=1e-10, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(B=st.integers(1, 3), S=st.integers(1, 5), heads=st.sampled_from([1, 2, 4]), dh=st.integers(1, 3),
       data=st.data())
def test_attention_any_shape_and_mask_matches_numpy(B, S, heads, dh, data):
    mask = np.array(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=S, max_size=S), min_size=B, max_size=B)))
    mask[:, 0] = 1  # at least one kept key per row (an all-padding row is a documented special case)
    m = nn.MultiHeadAttention(heads * dh, heads, dtype=mf.float64)
    x = np.random.default_rng(0).standard_normal((B, S, heads * dh))
    got = m(mf.tensor(x), mf.tensor(mask)).detach().numpy()
    np.testing.assert_allclose(got, ref.attention(x, ref.params_np(m), heads, mask), rtol=1e-10, atol=1e-12)


def test_attention_gradcheck_with_padding_mask():
    m = nn.MultiHeadAttention(4, 2)
    assert ref.gradcheck_module(m, [x64(2, 4, 4), mf.tensor(MASK)])


def test_padding_keys_do_not_affect_kept_positions():
    mf.manual_seed(1)
    layer = nn.TransformerLayer(8, 2, 16, dtype=mf.float64)
    x = np.random.default_rng(0).standard_normal((2, 4, 8))
    y1 = layer(mf.tensor(x), mf.tensor(MASK)).detach().numpy()
    x[0, 3] += 100.0  # change the padded token of batch row 0
    y2 = layer(mf.tensor(x), mf.tensor(MASK)).detach().numpy()
    np.testing.assert_allclose(y1[0, :3], y2[0, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y1[1], y2[1])


def test_mask_bias_is_finfo_min_for_padding():
    from minifuse.nn.attention import mask_bias
    b = mask_bias(mf.tensor([[1, 0]]), 1, 2, np.dtype(np.float32), "cpu").detach().numpy()
    assert b.shape == (1, 1, 1, 2) and b.dtype == np.float32
    assert b[0, 0, 0, 0] == 0 and b[0, 0, 0, 1] == np.finfo(np.float32).min


@pytest.mark.parametrize("activation,act", [("gelu", ref.gelu_erf), ("gelu_tanh", ref.gelu_tanh), ("relu", ref.relu)])
def test_transformer_layer_matches_numpy(activation, act):
    mf.manual_seed(2)
    layer = randomize(nn.TransformerLayer(6, 2, 10, activation=activation, dtype=mf.float64))
    x = np.random.default_rng(3).standard_normal((2, 4, 6))
    got = layer(mf.tensor(x), mf.tensor(MASK)).detach().numpy()
    want = ref.transformer_layer(x, ref.params_np(layer), 2, MASK, eps=1e-12, act=act)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)


def test_transformer_layer_gradcheck_with_padding_mask():
    layer = randomize(nn.TransformerLayer(4, 2, 6))
    assert ref.gradcheck_module(layer, [x64(2, 4, 4), mf.tensor(MASK)])


def test_transformer_layer_submodule_names():
    names = [k for k, _ in nn.TransformerLayer(4, 2, 8).named_parameters()]
    assert names == ["attn.qkv.weight", "attn.qkv.bias", "attn.out.weight", "attn.out.bias", "ln1.weight",
                     "ln1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "ln2.weight", "ln2.bias"]
    layer = nn.TransformerLayer(4, 2, 8)
    assert layer.attn.qkv.weight.shape == (12, 4) and layer.ln1.eps == 1e-12


def test_encoder_stacks_layers_and_gradchecks():
    mf.manual_seed(4)
    enc = nn.TransformerEncoder(lambda: nn.TransformerLayer(4, 2, 6, dtype=mf.float64), 2)
    x = np.random.default_rng(5).standard_normal((1, 3, 4))
    want = x
    for i in range(2):
        p = {k[len(f"layers.{i}."):]: v for k, v in ref.params_np(enc).items() if k.startswith(f"layers.{i}.")}
        want = ref.transformer_layer(want, p, 2)
    np.testing.assert_allclose(enc(mf.tensor(x)).detach().numpy(), want, rtol=1e-10, atol=1e-11)
    assert ref.gradcheck_module(enc, [x64(1, 3, 4)], fast_mode=True)


def test_encoder_from_kwargs_or_layer_copy():
    enc = nn.TransformerEncoder(dict(d_model=4, num_heads=2, intermediate_size=8), 3)
    assert len(enc.layers) == 3 and len(list(enc.parameters())) == 36
    proto = nn.TransformerLayer(4, 2, 8)
    enc2 = nn.TransformerEncoder(proto, 2)
    w0, w1 = enc2.layers[0].fc1.weight, enc2.layers[1].fc1.weight
    assert w0 is not w1 and np.array_equal(w0.detach().numpy(), w1.detach().numpy())
    with pytest.raises(TypeError, match="'layer'"):
        nn.TransformerEncoder(3, 2)


def test_attention_input_errors():
    m = nn.MultiHeadAttention(4, 2)
    with pytest.raises(ValueError, match=r"'attention_mask' must have shape .*\(2, 3\).*\(2, 4\)"):
        m(mf.randn(2, 3, 4), mf.ones(2, 4))
    with pytest.raises(ValueError, match="'input' must have last dimension 4"):
        m(mf.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"'x' must be \(batch, seq, d_model\)"):
        m(mf.randn(3, 4))
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiHeadAttention(5, 2)
    with pytest.raises(ValueError, match="valid: .*gelu"):
        nn.TransformerLayer(4, 2, 8, activation="swish")


@pytest.mark.parametrize("grad", [True, False])
def test_transformer_layer_and_encoder_name_a_bad_input(grad):
    """A NumPy array or list, the wrong dtype or width: the error names the layer and its argument
    'x' (not a kernel's array), on the fused path (no grad) as on the taped one."""
    layer = nn.TransformerLayer(8, 2, 12)
    encoder = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=12), 2)
    with mf.set_grad_enabled(grad):
        for module, name in ((layer, "TransformerLayer"), (encoder, "TransformerEncoder")):
            for bad in (np.zeros((2, 3, 8), np.float32), [[[0.0] * 8]]):
                with pytest.raises(TypeError, match=f"{name}: argument 'x' must be a Tensor, got {type(bad).__name__}"):
                    module(bad)
        for module in (layer, encoder):
            with pytest.raises(TypeError, match="TransformerLayer: argument 'x' must be float32 .*got float64"):
                module(mf.zeros(2, 3, 8, dtype=mf.float64))
            with pytest.raises(ValueError, match="TransformerLayer: argument 'x' must have last dimension 8"):
                module(mf.zeros(2, 3, 7))
            with pytest.raises(ValueError, match=r"TransformerLayer: argument 'x' must be \(batch, seq, d_model\)"):
                module(mf.zeros(3, 8))


@pytest.mark.parametrize("eps, error", [("1e-5", TypeError), (None, TypeError), (True, TypeError),
                                        (-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError)])
def test_layer_norm_eps_must_be_a_finite_number_at_least_0(eps, error):
    """What the fused kernels refuse (residual_layer_norm, transformer_layer) the layers refuse too,
    at construction."""
    with pytest.raises(error, match="TransformerLayer: 'layer_norm_eps' must be a"):
        nn.TransformerLayer(4, 2, 8, layer_norm_eps=eps)
    with pytest.raises(error, match="LayerNorm: 'eps' must be a"):
        nn.LayerNorm(4, eps=eps)
    assert nn.LayerNorm(4, eps=0).eps == 0.0 and nn.TransformerLayer(4, 2, 8, layer_norm_eps=1e-12)
