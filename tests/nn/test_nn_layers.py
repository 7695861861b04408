"""Linear, FusedLinear, activations, LayerNorm, Embedding, Dropout and losses: against NumPy
float64 references with the same weights, and gradcheck."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn as nn
import nn_reference as ref


def x64(*shape, seed=0):
    return mf.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=mf.float64, requires_grad=True)


# ---- Linear -----------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), fin=st.integers(1, 5),
       fout=st.integers(1, 5), bias=st.booleans())
def test_linear_matches_numpy_for_any_leading_shape(lead, fin, fout, bias):
    m = nn.Linear(fin, fout, bias=bias, dtype=mf.float64)
    x = np.random.default_rng(0).standard_normal(tuple(lead) + (fin,))
    p = ref.params_np(m)
    y = m(mf.tensor(x))
    assert y.shape == tuple(lead) + (fout,)
    np.testing.assert_allclose(y.detach().numpy(), ref.linear(x, p["weight"], p.get("bias")), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(bias):
    assert ref.gradcheck_module(nn.Linear(3, 2, bias=bias), [x64(2, 3)])


def test_linear_bad_input_names_argument_and_shapes():
    m = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"'input'.*last dimension 4.*\(2, 5\)"):
        m(mf.randn(2, 5))
    with pytest.raises(TypeError, match=r"'input' must be float32.*got float64"):
        m(mf.randn(2, 4, dtype=mf.float64))
    with pytest.raises(TypeError, match="'input' must be a Tensor"):
        m(np.zeros((2, 4)))


# ---- FusedLinear: every activation / approximate / bias combination ---------------------------
ACTS = {("relu", "tanh"): ref.relu, ("relu", "none"): ref.relu, ("silu", "tanh"): ref.silu,
        ("silu", "none"): ref.silu, ("gelu", "tanh"): ref.gelu_tanh, ("gelu", "none"): ref.gelu_erf}


@pytest.mark.parametrize("act,approximate", sorted(ACTS))
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_matches_numpy_and_gradchecks(act, approximate, bias):
    mf.manual_seed(3)
    m = nn.FusedLinear(4, 5, activation=act, bias=bias, approximate=approximate, dtype=mf.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 4)) * 2
    p = ref.params_np(m)
    want = ACTS[act, approximate](ref.linear(x, p["weight"], p.get("bias")))
    np.testing.assert_allclose(m(mf.tensor(x)).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    with mf.no_grad():  # the inference path computes the same function (no silent GELU switch)
        np.testing.assert_allclose(m(mf.tensor(x)).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    assert ref.gradcheck_module(m, [x64(2, 4, seed=2)])


def test_fused_linear_gelu_defaults_to_tanh_and_differs_from_erf():
    mf.manual_seed(0)
    a = nn.FusedLinear(4, 8, activation="gelu")
    mf.manual_seed(0)
    b = nn.FusedLinear(4, 8, activation="gelu", approximate="none")
    assert a.approximate == "tanh"
    x = mf.randn(16, 4) * 3
    assert np.abs(a(x).detach().numpy() - b(x).detach().numpy()).max() > 1e-5
    assert "approximate='tanh'" in repr(a)


def test_fused_linear_rejects_unknown_activation_listing_valid_ones():
    with pytest.raises(ValueError, match="'tanh'.*relu, gelu, silu"):
        nn.FusedLinear(2, 2, activation="tanh")
    with pytest.raises(ValueError, match="approximate"):
        nn.FusedLinear(2, 2, activation="gelu", approximate="erf")


def test_fused_linear_has_linear_parameters_and_init():
    mf.manual_seed(7)
    lin = nn.Linear(6, 3)
    mf.manual_seed(7)
    fused = nn.FusedLinear(6, 3)
    assert fused.weight.shape == (3, 6) and fused.bias.shape == (3,)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), fused.weight.detach().numpy())
    assert nn.FusedLinear(6, 3, bias=False).bias is None


# ---- activation modules ------------------------------------------------------------------------
@pytest.mark.parametrize("module,fn", [(nn.ReLU(), ref.relu), (nn.GELU(), ref.gelu_erf),
                                       (nn.GELU("tanh"), ref.gelu_tanh), (nn.SiLU(), ref.silu),
                                       (nn.Sigmoid(), ref.sigmoid), (nn.Tanh(), np.tanh)])
def test_activation_modules(module, fn):
    x = x64(3, 4)
    np.testing.assert_allclose(module(x).detach().numpy(), fn(x.detach().numpy()), rtol=1e-12, atol=1e-14)
    assert mf.autograd.gradcheck(module, (x,))


# ---- LayerNorm ---------------------------------------------------------------------------------
def test_layer_norm_matches_numpy_and_gradchecks():
    m = nn.LayerNorm(5, eps=1e-5, dtype=mf.float64)
    rng = np.random.default_rng(0)
    m.weight.data[...] = rng.standard_normal(5)
    m.bias.data[...] = rng.standard_normal(5)
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    np.testing.assert_allclose(m(mf.tensor(x)).detach().numpy(), ref.layer_norm(x, m.weight.data, m.bias.data, 1e-5),
                               rtol=1e-10, atol=1e-12)
    assert ref.gradcheck_module(m, [x64(2, 5)])


def test_layer_norm_init_and_errors():
    m = nn.LayerNorm(4)
    np.testing.assert_array_equal(m.weight.detach().numpy(), np.ones(4))
    np.testing.assert_array_equal(m.bias.detach().numpy(), np.zeros(4))
    with pytest.raises(ValueError, match="'input' must have last dimension 4"):
        m(mf.randn(2, 3))


# ---- Embedding ---------------------------------------------------------------------------------
def test_embedding_lookup_and_gradient_accumulates_repeats():
    m = nn.Embedding(5, 3, dtype=mf.float64)
    idx = mf.tensor([[1, 4, 1]])
    out = m(idx)
    np.testing.assert_array_equal(out.detach().numpy(), m.weight.detach().numpy()[[[1, 4, 1]]])
    out.sum().backward()
    np.testing.assert_array_equal(m.weight.grad.detach().numpy()[:, 0], [0, 2, 0, 0, 1])
    assert ref.gradcheck_module(nn.Embedding(5, 2), [idx])
    with pytest.raises(IndexError, match="out of range"):
        m(mf.tensor([5]))


# ---- Dropout -----------------------------------------------------------------------------------
def test_dropout_train_eval_and_seeded():
    d = nn.Dropout(0.5)
    x = mf.ones(1000)
    mf.manual_seed(11)
    a = d(x).detach().numpy()
    mf.manual_seed(11)
    b = d(x).detach().numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 2.0} and 400 < (a == 0).sum() < 600
    np.testing.assert_array_equal(d.eval()(x).detach().numpy(), x.detach().numpy())
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.5)


# ---- losses ------------------------------------------------------------------------------------
def test_cross_entropy_loss_matches_numpy_and_gradchecks():
    logits = x64(4, 3)
    target = mf.tensor([0, 2, 1, 2])
    z = logits.detach().numpy()
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -logp[np.arange(4), [0, 2, 1, 2]].mean()
    assert math.isclose(nn.CrossEntropyLoss()(logits, target).item(), want, rel_tol=1e-12)
    assert mf.autograd.gradcheck(lambda z: nn.CrossEntropyLoss()(z, target), (logits,))


def test_mse_loss_matches_numpy_and_gradchecks():
    a, b = x64(3, 2), x64(3, 2, seed=1)
    want = ((a.detach().numpy() - b.detach().numpy()) ** 2).mean()
    assert math.isclose(nn.MSELoss()(a, b).item(), want, rel_tol=1e-12)
    assert mf.autograd.gradcheck(nn.MSELoss(reduction="sum"), (a, b))
