"""attention and attention_packed, both methods ('loop': the row-blocked kernel, 'bmm': batched
BLAS products around the fused softmax kernel), against the unfused float64 reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifuse.kernels import cpu
from tests.kernels import reference as ref

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")
FAST = settings(max_examples=25, deadline=None)
DTYPES = st.sampled_from([np.float32, np.float64])
SEED = st.integers(0, 2**32 - 1)
METHODS = st.sampled_from(["loop", "bmm"])


def _mask(rng, b, s, kind):
    if kind == "none":
        return None
    m = rng.random((b, s)) < 0.7
    if kind == "bool":
        m[:, 0] = True
        return m
    if kind == "all_padded":                     # a fully padded row: uniform over all keys
        m[0] = False
    return m.astype(np.int64 if kind == "int" else np.float32)


@FAST
@given(dtype=DTYPES, b=st.sampled_from([0, 1, 2]), h=st.sampled_from([1, 3]), sq=st.sampled_from([1, 4, 7]),
       sk=st.sampled_from([1, 5, 9]), d=st.sampled_from([1, 4, 8]),
       mask=st.sampled_from(["none", "bool", "int", "all_padded"]), layout=st.sampled_from(["c", "strided", "t"]),
       method=METHODS, seed=SEED)
def test_attention(dtype, b, h, sq, sk, d, mask, layout, method, seed):
    rng = np.random.default_rng(seed)
    q = ref.randn(rng, (b, h, sq, d), dtype, layout != "strided", scale=2)
    k = ref.randn(rng, (b, h, sk, d), dtype, layout != "strided", scale=2)
    v = ref.randn(rng, (b, h, sk, d), dtype)
    if layout == "t":                           # heads-major views of (B, S, H, D) arrays
        k = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    key_mask = _mask(rng, b, sk, mask) if b else None
    out = cpu.attention(q, k, v, key_mask, d ** -0.5, method=method)
    ref.assert_close(out, ref.attention(q, k, v, key_mask, d ** -0.5, dtype), ref.RTOL[dtype])


@FAST
@given(dtype=DTYPES, b=st.sampled_from([0, 1, 3]), s=st.sampled_from([1, 2, 6]), heads=st.sampled_from([1, 2, 4]),
       dh=st.sampled_from([1, 3, 8]), mask=st.sampled_from(["none", "bool", "int", "all_padded"]),
       contiguous=st.booleans(), method=METHODS, seed=SEED)
def test_attention_packed(dtype, b, s, heads, dh, mask, contiguous, method, seed):
    rng = np.random.default_rng(seed)
    qkv = ref.randn(rng, (b, s, 3 * heads * dh), dtype, contiguous, scale=2)
    key_mask = _mask(rng, b, s, mask) if b else None
    out = cpu.attention_packed(qkv, key_mask, heads, 0.3, method=method)
    assert out.shape == (b, s, heads * dh)
    ref.assert_close(out, ref.attention_packed(qkv, key_mask, heads, 0.3, dtype), ref.RTOL[dtype])


@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_padding_keys_have_no_weight(rng, method):
    """Changing the padded keys/values must not change the output."""
    q, k, v = (ref.randn(rng, (1, 2, 3, 4), np.float32) for _ in range(3))
    mask = np.array([[1, 1, 0]])
    out = cpu.attention(q, k, v, mask, 0.5, method=method)
    k[..., 2, :], v[..., 2, :] = 100.0, -100.0
    np.testing.assert_allclose(cpu.attention(q, k, v, mask, 0.5, method=method), out, rtol=1e-6)


@pytest.mark.parametrize("method", ["loop", "bmm"])
@pytest.mark.parametrize("keys", [4, 37])           # 37: the softmax's 16-lane max and its tail
def test_methods_agree_on_longer_rows(rng, method, keys):
    q, k, v = (ref.randn(rng, (2, 3, keys, 8), np.float32, scale=2) for _ in range(3))
    mask = np.ones((2, keys))
    mask[1, keys // 2:] = 0
    ref.assert_close(cpu.attention(q, k, v, mask, 0.4, method=method),
                     ref.attention(q, k, v, mask, 0.4, np.float32), ref.RTOL[np.float32])


@pytest.mark.parametrize("method", ["loop", "bmm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_propagate_like_reference(dtype, rng, method):
    q, k, v = (ref.randn(rng, (1, 1, 4, 3), dtype) for _ in range(3))
    q[0, 0, 0, 1] = np.nan          # row 0 all NaN
    k[0, 0, 2, 0] = np.inf          # +-inf score on key 2 for every row: inf - inf = NaN in softmax
    v[0, 0, 1, 2] = -np.inf         # -inf value column 2
    expected = ref.attention(q, k, v, None, 1.0, dtype)
    out = cpu.attention(q, k, v, None, 1.0, method=method)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    ref.assert_close(out, expected, ref.RTOL[dtype])


def test_out_buffer(rng):
    q = ref.randn(rng, (2, 2, 3, 4), np.float64)
    out = np.empty_like(q)
    assert cpu.attention(q, q, q, None, 1.0, out=out) is out
    packed_out = np.empty((2, 3, 4))
    assert cpu.attention_packed(ref.randn(rng, (2, 3, 12), np.float64), None, 2, 1.0, out=packed_out) is packed_out
