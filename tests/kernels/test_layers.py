"""transformer_layer and mlp on every backend against compositions of the float64 references."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import choice, dtypes, given_backend
from minifuse.kernels.weights import LayerWeights
from tests.kernels import reference as ref

SEED = st.integers(0, 2**32 - 1)


def _layer_weights(rng, d, f, dtype, biases=True):
    p = lambda *s, scale=1.0: ref.randn(rng, s, dtype, scale=scale)  # noqa: E731
    b = (lambda n: p(n, scale=0.1)) if biases else (lambda n: None)
    sd, sf = max(d, 1) ** -0.5, max(f, 1) ** -0.5
    return LayerWeights(p(3 * d, d, scale=sd), b(3 * d), p(d, d, scale=sd), b(d), 1 + p(d, scale=0.1),
                        p(d, scale=0.1), p(f, d, scale=sd), b(f), p(d, f, scale=sf), b(d),
                        1 + p(d, scale=0.1), p(d, scale=0.1))


# The simulator runs a block per LayerNorm row (B * S) and per score row (B * H * S): tiny layers.
@given_backend(examples=20, dtype=dtypes, b=choice([0, 1, 2]), s=choice([0, 1, 3, 8], [0, 1, 3]),
               heads=choice([1, 2, 4], [1, 2]), dh=choice([0, 1, 4, 8], [0, 1, 4]), ffn=st.sampled_from([0, 1, 4]),
               biases=st.booleans(),
               masked=st.booleans(), act=st.sampled_from(["gelu", "gelu_tanh", "relu"]), contiguous=st.booleans(),
               method=st.sampled_from(["loop", "bmm"]), seed=SEED)
def test_transformer_layer(backend, dtype, b, s, heads, dh, ffn, biases, masked, act, contiguous, method, seed):
    """Every size may be 0 or 1 (d_model 0, no FFN width, no tokens, no batch)."""
    rng = np.random.default_rng(seed)
    d, f = heads * dh, ffn * heads * max(dh, 1)
    x = ref.randn(rng, (b, s, d), dtype, contiguous)
    weights = _layer_weights(rng, d, f, dtype, biases)
    mask = (rng.random((b, s)) < 0.7).astype(np.int64) if masked else None
    out = backend.K.transformer_layer(backend.to_dev(x), weights.map(backend.to_dev), backend.to_dev(mask), heads,
                                      1e-12, activation=act, attention_method=method)
    expected = ref.transformer_layer(x, weights, mask, heads, 1e-12, act, dtype)
    ref.assert_close(backend.to_host(out), expected, backend.layer_rtol(dtype))


def test_transformer_layer_small(backend, dtype, rng):
    """The CUDA tests' layer: d 8, 2 heads, F 16, an int32 mask with a padded key, eps 1e-5."""
    x = ref.randn(rng, (2, 3, 8), dtype)
    weights = _layer_weights(rng, 8, 16, dtype)
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
    got = backend.K.transformer_layer(backend.to_dev(x), weights.map(backend.to_dev), backend.to_dev(mask),
                                      num_heads=2, eps=1e-5, activation="gelu")
    expected = ref.transformer_layer(x, weights, mask, 2, 1e-5, "gelu", dtype)
    ref.assert_close(backend.to_host(got), expected, backend.layer_rtol(dtype))


def test_transformer_layer_bert_like_shape(backend, rng):
    """MiniLM-like widths (d 384 would be slow here: d 96, 12 heads of 8), float32, padded batch."""
    if backend.simulated:
        pytest.skip("420 simulated blocks (about a minute); test_transformer_layer covers the simulator")
    d, f, heads = 96, 384, 12
    x = ref.randn(rng, (3, 10, d), np.float32)
    weights = _layer_weights(rng, d, f, np.float32)
    mask = np.ones((3, 10), np.int64)
    mask[1, 6:] = 0
    out = backend.K.transformer_layer(backend.to_dev(x), weights.map(backend.to_dev), backend.to_dev(mask), heads,
                                      1e-12)
    ref.assert_close(backend.to_host(out), ref.transformer_layer(x, weights, mask, heads, 1e-12, "gelu", np.float32),
                     1e-4)


def test_transformer_layer_nan_stays_in_its_sequence(backend, rng):
    """A NaN in one token reaches every token of its sequence (through the attention) and no other
    sequence. So does an inf in a padded token: its value row meets a probability of exactly 0, and
    0 * inf is NaN, as in the unfused path (the reference). The padded position's own output is
    zero all the same."""
    x = ref.randn(rng, (3, 3, 4), np.float32)
    x[0, 1, 2] = np.nan                      # sequence 0
    x[2, 2, 0] = np.inf                      # sequence 2, a padded key
    weights = _layer_weights(rng, 4, 8, np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    out = backend.to_host(backend.K.transformer_layer(backend.to_dev(x), weights.map(backend.to_dev),
                                                      backend.to_dev(mask), 2, 1e-5))
    expected = ref.transformer_layer(x, weights, mask, 2, 1e-5, "gelu", np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all() and np.isnan(out[2, :2]).all()
    assert (out[2, 2] == 0).all()
    ref.assert_close(out, expected, backend.layer_rtol(np.float32))


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_mlp_nan_inf_rows(backend, rng, activation):
    x = ref.randn(rng, (4, 6), np.float32)
    x[1, 2], x[3, 0] = np.nan, np.inf
    width = 8 if activation == "swiglu" else 4
    w1, w2 = ref.randn(rng, (width, 6), np.float32), ref.randn(rng, (3, 4), np.float32)
    out = backend.to_host(backend.K.mlp(*map(backend.to_dev, (x, w1, None, w2, None)), activation))
    expected = ref.mlp(x, w1, None, w2, None, activation)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    ref.assert_close(out, expected, 1e-5)


@given_backend(examples=20, dtype=dtypes, lead=st.sampled_from([(0,), (1,), (5,), (2, 3), (2, 1, 3)]),
               c=st.sampled_from([0, 1, 4, 9]), hid=st.sampled_from([0, 1, 6]), cout=st.sampled_from([0, 1, 5]),
               act=st.sampled_from(["relu", "gelu", "gelu_tanh", "silu", "glu", "swiglu"]), biases=st.booleans(),
               contiguous=st.booleans(), seed=SEED)
def test_mlp(backend, dtype, lead, c, hid, cout, act, biases, contiguous, seed):
    rng = np.random.default_rng(seed)
    width = 2 * hid if act in ("glu", "swiglu") else hid
    x = ref.randn(rng, lead + (c,), dtype, contiguous)
    w1, w2 = ref.randn(rng, (width, c), dtype), ref.randn(rng, (cout, hid), dtype)
    b1, b2 = (ref.randn(rng, (width,), dtype), ref.randn(rng, (cout,), dtype)) if biases else (None, None)
    out = backend.K.mlp(*map(backend.to_dev, (x, w1, b1, w2, b2)), act)
    assert out.shape == lead + (cout,)
    ref.assert_close(backend.to_host(out), ref.mlp(x, w1, b1, w2, b2, act), backend.rtol(dtype))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
def test_mlp_each_activation(backend, rng, activation):
    dtype = np.float64
    x = ref.randn(rng, (2, 2, 6), dtype)
    w1, b1 = ref.randn(rng, (8, 6), dtype), ref.randn(rng, 8, dtype)
    hid = 4 if activation in ("glu", "swiglu") else 8
    w2, b2 = ref.randn(rng, (5, hid), dtype), ref.randn(rng, 5, dtype)
    got = backend.K.mlp(*map(backend.to_dev, (x, w1, b1, w2, b2)), activation)
    ref.assert_close(backend.to_host(got), ref.mlp(x, w1, b1, w2, b2, activation), 1e-10)
