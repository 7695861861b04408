"""transformer_layer and mlp against compositions of the float64 references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifuse.kernels import cpu
from tests.kernels import reference as ref

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")
FAST = settings(max_examples=20, deadline=None)
LAYER_RTOL = {np.float32: 1e-4, np.float64: 1e-10}
SEED = st.integers(0, 2**32 - 1)


def _layer_params(rng, d, f, dtype, biases):
    p = lambda *s, scale=1.0: ref.randn(rng, s, dtype, scale=scale)
    b = (lambda n: p(n, scale=0.1)) if biases else (lambda n: None)
    return [p(3 * d, d, scale=d ** -0.5), b(3 * d), p(d, d, scale=d ** -0.5), b(d), 1 + p(d, scale=0.1),
            p(d, scale=0.1), p(f, d, scale=d ** -0.5), b(f), p(d, f, scale=f ** -0.5), b(d),
            1 + p(d, scale=0.1), p(d, scale=0.1)]


@FAST
@given(dtype=st.sampled_from([np.float32, np.float64]), b=st.sampled_from([0, 1, 2]), s=st.sampled_from([1, 3, 8]),
       heads=st.sampled_from([1, 2, 4]), dh=st.sampled_from([1, 4, 8]), biases=st.booleans(),
       masked=st.booleans(), act=st.sampled_from(["gelu", "gelu_tanh", "relu"]), contiguous=st.booleans(),
       method=st.sampled_from(["loop", "bmm"]), seed=SEED)
def test_transformer_layer(dtype, b, s, heads, dh, biases, masked, act, contiguous, method, seed):
    rng = np.random.default_rng(seed)
    d, f = heads * dh, 4 * heads * dh
    x = ref.randn(rng, (b, s, d), dtype, contiguous)
    params = _layer_params(rng, d, f, dtype, biases)
    mask = (rng.random((b, s)) < 0.7).astype(np.int64) if masked else None
    out = cpu.transformer_layer(x, *params, mask, heads, 1e-12, activation=act, attention_method=method)
    expected = ref.transformer_layer(x, *params, mask, heads, 1e-12, act, dtype)
    ref.assert_close(out, expected, LAYER_RTOL[dtype])


def test_transformer_layer_bert_like_shape(rng):
    """MiniLM-like widths (d 384 would be slow here: d 96, 12 heads of 8), float32, padded batch."""
    d, f, heads = 96, 384, 12
    x = ref.randn(rng, (3, 10, d), np.float32)
    params = _layer_params(rng, d, f, np.float32, True)
    mask = np.ones((3, 10), np.int64)
    mask[1, 6:] = 0
    out = cpu.transformer_layer(x, *params, mask, heads, 1e-12)
    ref.assert_close(out, ref.transformer_layer(x, *params, mask, heads, 1e-12, "gelu", np.float32), 1e-4)


@FAST
@given(dtype=st.sampled_from([np.float32, np.float64]), lead=st.sampled_from([(0,), (1,), (5,), (2, 3), (2, 1, 3)]),
       c=st.sampled_from([1, 4, 9]), hid=st.sampled_from([1, 6]), cout=st.sampled_from([1, 5]),
       act=st.sampled_from(["relu", "gelu", "gelu_tanh", "silu", "glu", "swiglu"]), biases=st.booleans(),
       contiguous=st.booleans(), seed=SEED)
def test_mlp(dtype, lead, c, hid, cout, act, biases, contiguous, seed):
    rng = np.random.default_rng(seed)
    width = 2 * hid if act in ("glu", "swiglu") else hid
    x = ref.randn(rng, lead + (c,), dtype, contiguous)
    w1, w2 = ref.randn(rng, (width, c), dtype), ref.randn(rng, (cout, hid), dtype)
    b1, b2 = (ref.randn(rng, (width,), dtype), ref.randn(rng, (cout,), dtype)) if biases else (None, None)
    out = cpu.mlp(x, w1, b1, w2, b2, act)
    assert out.shape == lead + (cout,)
    ref.assert_close(out, ref.mlp(x, w1, b1, w2, b2, act), ref.RTOL[dtype])
