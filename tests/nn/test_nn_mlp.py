"""MLP: structure, NumPy reference, gradcheck, flop_count, init, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
import nn_reference as ref

GATES = {"glu": ref.sigmoid, "swiglu": ref.silu}
PLAIN = {"relu": ref.relu, "gelu": ref.gelu_erf, "silu": ref.silu}


def mlp_numpy(x, p, activation, hidden):
    h = ref.linear(x, p["layer1.weight"], p.get("layer1.bias"))
    if activation in GATES:
        a, b = h[..., :hidden], h[..., hidden:]  # the FIRST half is the gate
        h = GATES[activation](a) * b
    else:
        h = PLAIN[activation](h)
    return ref.linear(h, p["layer2.weight"], p.get("layer2.bias"))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_matches_numpy_and_gradchecks(activation, bias):
    mf.manual_seed(0)
    m = nn.MLP(3, activation, expansion_factor=1.5, bias=bias, dtype=mf.float64)
    if bias:  # zero-initialised; make them non-zero so the reference checks their use
        for layer in (m.layer1, m.layer2):
            nn.init.normal_(layer.bias)
    x = np.random.default_rng(1).standard_normal((2, 2, 3))  # (B, *spatial, C)
    got = m(mf.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, mlp_numpy(x, ref.params_np(m), activation, m.hidden_dim), rtol=1e-11, atol=1e-12)
    xg = mf.tensor(np.random.default_rng(2).standard_normal((2, 3)), requires_grad=True)
    assert ref.gradcheck_module(m, [xg])


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(1, 6), factor=st.sampled_from([0.5, 1.0, 4 / 3, 2.0, 2.7]),
       activation=st.sampled_from(["relu", "gelu", "silu", "glu", "swiglu"]),
       spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2))
def test_mlp_shapes_and_hidden_dim(dim, factor, activation, spatial):
    hidden = math.floor(factor * dim)
    if hidden < 1:
        with pytest.raises(ValueError, match="hidden_dim"):
            nn.MLP(dim, activation, expansion_factor=factor)
        return
    m = nn.MLP(dim, activation, expansion_factor=factor)
    glu = 2 if activation in GATES else 1
    assert m.hidden_dim == hidden and m.is_glu_variant == (glu == 2) and m.activation == activation
    assert m.layer1.weight.shape == (glu * hidden, dim) and m.layer2.weight.shape == (dim, hidden)
    x = mf.randn(2, *spatial, dim)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
def test_flop_count_is_the_seeds_formula(activation):
    m = nn.MLP(12, activation, expansion_factor=4 / 3)
    T, C, H = 7, 12, 16
    if activation in GATES:  # layer1: C -> 2H; activation + gate product: 2 T H
        want = 2 * T * C * (2 * H) + 2 * T * H + 2 * T * H * C
    else:
        want = 2 * T * C * H + T * H + 2 * T * H * C
    assert m.flop_count(T) == want


def test_curried_init_methods_and_zero_bias():
    calls = []

    def init_in(out_features):
        calls.append(("in", out_features))
        return lambda w: nn.init.constant_(w, 0.5)

    def init_out(out_features):
        calls.append(("out", out_features))
        return nn.init.ones_

    m = nn.MLP(4, "swiglu", expansion_factor=2.0, bias=True, init_method_in=init_in, init_method_out=init_out)
    assert calls == [("in", 16), ("out", 4)]
    assert (m.layer1.weight.detach().numpy() == 0.5).all() and (m.layer2.weight.detach().numpy() == 1).all()
    assert (m.layer1.bias.detach().numpy() == 0).all() and (m.layer2.bias.detach().numpy() == 0).all()
    default = nn.MLP(4, "relu", bias=True)
    assert (default.layer1.bias.detach().numpy() == 0).all()  # zero even without init methods
    assert np.abs(default.layer1.weight.detach().numpy()).max() <= 1 / math.sqrt(4)


def test_dropout_argument_probability_or_module():
    assert isinstance(nn.MLP(4, "relu").dropout, nn.Identity)
    m = nn.MLP(4, "relu", dropout=0.25)
    assert isinstance(m.dropout, nn.Dropout) and m.dropout.p == 0.25
    custom = nn.Dropout(0.1)
    assert nn.MLP(4, "relu", dropout=custom).dropout is custom
    with pytest.raises(ValueError):
        nn.MLP(4, "relu", dropout=-0.1)


def test_dropout_sits_between_activation_and_layer2():
    mf.manual_seed(0)
    m = nn.MLP(4, "relu", dropout=0.5, dtype=mf.float64)
    x = mf.randn(3, 4, dtype=mf.float64)
    mf.manual_seed(5)
    got = m(x).detach().numpy()
    mf.manual_seed(5)
    keep = np.random.default_rng(5)  # same stream as mf.manual_seed(5): the mask of (3, 8)
    mask = (keep.random((3, m.hidden_dim)) >= 0.5) / 0.5
    p = ref.params_np(m)
    want = ref.linear(ref.relu(ref.linear(x.detach().numpy(), p["layer1.weight"])) * mask, p["layer2.weight"])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    m.eval()
    np.testing.assert_allclose(m(x).detach().numpy(), mlp_numpy(x.detach().numpy(), p, "relu", 8), rtol=1e-12)


def test_backend_and_activation_errors():
    with pytest.raises(ValueError, match="valid: auto, unfused, fused"):
        nn.MLP(4, "relu", backend="torch")
    assert nn.MLP(4, "relu", backend="fused").backend == "fused"  # training path: tests/fusions
    with pytest.raises(ValueError, match="relu, gelu, silu, glu, swiglu"):
        nn.MLP(4, "tanh")
    with pytest.raises(ValueError, match="last dimension 4"):
        nn.MLP(4, "relu")(mf.randn(2, 5))
    assert nn.MLP(4, "relu", backend="unfused").backend == "unfused"
