"""attention and attention_packed on every backend, both methods ('loop': the CPU's row-blocked
kernel, 'bmm': batched products around the fused softmax kernel; CUDA takes both names and runs
its one implementation), against the unfused float64 reference."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import choice, dtypes, given_backend
from tests.kernels import reference as ref

SEED = st.integers(0, 2**32 - 1)
METHODS = st.sampled_from(["loop", "bmm"])
MASKS = st.sampled_from(["none", "bool", "int", "all_padded"])


def _mask(rng, b, s, kind):
    if kind == "none":
        return None
    m = rng.random((b, s)) < 0.7
    if kind == "bool":
        m[:, :1] = True
        return m
    if kind == "all_padded":                     # a fully padded row: uniform over all keys
        m[0] = False
    return m.astype(np.int64 if kind == "int" else np.float32)


def check(backend, actual, expected, dtype):
    ref.assert_close(backend.to_host(actual), expected, backend.rtol(dtype))


# The simulator runs a block per score row (B * H * Sq of them): small batches, heads and queries.
@given_backend(dtype=dtypes, b=choice([0, 1, 2]), h=choice([1, 3], [1, 2]), sq=choice([0, 1, 4, 7], [0, 1, 3]),
               sk=choice([0, 1, 5, 9]), d=choice([0, 1, 4, 8]), mask=MASKS, layout=st.sampled_from(["c", "strided", "t"]),
               method=METHODS, seed=SEED)
def test_attention(backend, dtype, b, h, sq, sk, d, mask, layout, method, seed):
    rng = np.random.default_rng(seed)
    q = ref.randn(rng, (b, h, sq, d), dtype, layout != "strided", scale=2)
    k = ref.randn(rng, (b, h, sk, d), dtype, layout != "strided", scale=2)
    v = ref.randn(rng, (b, h, sk, d), dtype)
    if layout == "t":                           # heads-major views of (B, S, H, D) arrays
        k = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    key_mask = _mask(rng, b, sk, mask) if b else None
    scale = d ** -0.5 if d else 1.0
    out = backend.K.attention(*map(backend.to_dev, (q, k, v, key_mask)), scale, method=method)
    check(backend, out, ref.attention(q, k, v, key_mask, scale, dtype), dtype)


@given_backend(dtype=dtypes, b=choice([0, 1, 3], [0, 1, 2]), s=choice([0, 1, 2, 6], [0, 1, 2, 3]),
               heads=choice([1, 2, 4], [1, 2]), dh=choice([0, 1, 3, 8]), mask=MASKS, contiguous=st.booleans(),
               method=METHODS, seed=SEED)
def test_attention_packed(backend, dtype, b, s, heads, dh, mask, contiguous, method, seed):
    rng = np.random.default_rng(seed)
    qkv = ref.randn(rng, (b, s, 3 * heads * dh), dtype, contiguous, scale=2)
    key_mask = _mask(rng, b, s, mask) if b else None
    out = backend.K.attention_packed(backend.to_dev(qkv), backend.to_dev(key_mask), heads, 0.3, method=method)
    assert out.shape == (b, s, heads * dh)
    check(backend, out, ref.attention_packed(qkv, key_mask, heads, 0.3, dtype), dtype)


def test_attention_int_and_no_mask(backend, dtype, rng):
    q = ref.randn(rng, (2, 2, 3, 4), dtype)
    k, v = ref.randn(rng, (2, 2, 5, 4), dtype), ref.randn(rng, (2, 2, 5, 4), dtype)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int64)
    dev = backend.to_dev
    check(backend, backend.K.attention(*map(dev, (q, k, v, mask)), 0.7), ref.attention(q, k, v, mask, 0.7, dtype),
          dtype)
    check(backend, backend.K.attention(*map(dev, (q, k, v)), None, 0.5), ref.attention(q, k, v, None, 0.5, dtype),
          dtype)


def test_attention_packed_bool_mask(backend, dtype, rng):
    qkv = ref.randn(rng, (2, 3, 3 * 8), dtype)
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    check(backend, backend.K.attention_packed(backend.to_dev(qkv), backend.to_dev(mask), 2, 0.5),
          ref.attention_packed(qkv, mask, 2, 0.5, dtype), dtype)


@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_all_keys_masked_is_uniform(backend, rng, method):
    q, k, v = (ref.randn(rng, (1, 1, 2, 4), np.float64) for _ in range(3))
    mask = np.zeros((1, 2), bool)
    out = backend.to_host(backend.K.attention(*map(backend.to_dev, (q, k, v, mask)), 1.0, method=method))
    ref.assert_close(out, ref.attention(q, k, v, mask, 1.0, np.float64), 1e-10)
    np.testing.assert_allclose(out, np.broadcast_to(v.mean(2, keepdims=True), out.shape), rtol=1e-12)


@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_no_keys_gives_zeros(backend, rng, method):
    """With 0 keys each output row is an empty weighted sum: 0, as P @ v and NumPy give (not 0 / 0)."""
    q = ref.randn(rng, (2, 1, 3, 4), np.float32)
    k = np.zeros((2, 1, 0, 4), np.float32)
    for mask in (None, np.zeros((2, 0), bool)):
        out = backend.K.attention(*map(backend.to_dev, (q, k, k, mask)), 0.5, method=method)
        np.testing.assert_array_equal(backend.to_host(out), np.zeros((2, 1, 3, 4), np.float32))


def test_host_mask_with_device_arrays(backend, rng):
    """A NumPy key mask is taken with the backend's arrays (on a GPU it is copied there)."""
    q = backend.to_dev(ref.randn(rng, (1, 1, 2, 4), np.float32))
    mask = np.array([[1, 0]])
    ref.assert_close(backend.to_host(backend.K.attention(q, q, q, mask, 1.0)),
                     ref.attention(backend.to_host(q), *[backend.to_host(q)] * 2, mask, 1.0, np.float32), 1e-5)


@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_padding_keys_have_no_weight(backend, rng, method):
    """Changing the padded keys/values must not change the output."""
    q, k, v = (ref.randn(rng, (1, 2, 3, 4), np.float32) for _ in range(3))
    mask = np.array([[1, 1, 0]])
    dev = backend.to_dev
    out = backend.to_host(backend.K.attention(dev(q), dev(k), dev(v), mask, 0.5, method=method))
    k[..., 2, :], v[..., 2, :] = 100.0, -100.0
    np.testing.assert_allclose(backend.to_host(backend.K.attention(dev(q), dev(k), dev(v), mask, 0.5, method=method)),
                               out, rtol=1e-6)


@pytest.mark.parametrize("method", ["loop", "bmm"])
@pytest.mark.parametrize("keys", [4, 37])           # 37: the CPU softmax's 16-lane max and its tail
def test_methods_agree_on_longer_rows(backend, rng, method, keys):
    nb, nh, sq = backend.pick((2, 3, keys), (2, 1, 2))     # the simulator: 4 score rows, not 222
    q = ref.randn(rng, (nb, nh, sq, 8), np.float32, scale=2)
    k, v = (ref.randn(rng, (nb, nh, keys, 8), np.float32, scale=2) for _ in range(2))
    mask = np.ones((nb, keys))
    mask[1, keys // 2:] = 0
    check(backend, backend.K.attention(*map(backend.to_dev, (q, k, v, mask)), 0.4, method=method),
          ref.attention(q, k, v, mask, 0.4, np.float32), np.float32)


@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_nan_inf_propagate_like_reference(backend, dtype, rng, method):
    q, k, v = (ref.randn(rng, (1, 1, 4, 3), dtype) for _ in range(3))
    q[0, 0, 0, 1] = np.nan          # row 0 all NaN
    k[0, 0, 2, 0] = np.inf          # +-inf score on key 2 for every row: inf - inf = NaN in softmax
    v[0, 0, 1, 2] = -np.inf         # -inf value column 2
    expected = ref.attention(q, k, v, None, 1.0, dtype)
    out = backend.to_host(backend.K.attention(*map(backend.to_dev, (q, k, v)), None, 1.0, method=method))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    ref.assert_close(out, expected, backend.rtol(dtype))


def test_attention_packed_nan_inf(backend, dtype, rng):
    qkv = ref.randn(rng, (2, 3, 12), dtype)
    qkv[0, 1, 0] = np.nan          # a query of head 0: its row
    qkv[1, 2, 4 + 3] = np.inf      # a key of head 1 (masked in the second run)
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    for key_mask in (None, mask):
        expected = ref.attention_packed(qkv, key_mask, 2, 0.5, dtype)
        out = backend.to_host(backend.K.attention_packed(backend.to_dev(qkv), backend.to_dev(key_mask), 2, 0.5))
        np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
        ref.assert_close(out, expected, backend.rtol(dtype))


def test_out_buffer(backend, rng):
    q = backend.to_dev(ref.randn(rng, (2, 2, 3, 4), np.float64))
    out = backend.xp.empty_like(q)
    assert backend.K.attention(q, q, q, None, 1.0, out=out) is out
    qh = backend.to_host(q)
    check(backend, out, ref.attention(qh, qh, qh, None, 1.0, np.float64), np.float64)
    packed_out = backend.xp.empty((2, 3, 4))
    qkv = ref.randn(rng, (2, 3, 12), np.float64)
    assert backend.K.attention_packed(backend.to_dev(qkv), None, 2, 1.0, out=packed_out) is packed_out
    check(backend, packed_out, ref.attention_packed(qkv, None, 2, 1.0, np.float64), np.float64)


@given_backend(dtype=dtypes, b=choice([0, 1, 3], [0, 1, 2]), s=choice([0, 1, 2, 5], [0, 1, 3]),
               parts=st.sampled_from([1, 3]), heads=choice([1, 2, 3]), dh=choice([1, 3, 4, 8]),
               contiguous=st.booleans(), seed=SEED)
def test_to_heads_and_from_heads(backend, dtype, b, s, parts, heads, dh, contiguous, seed):
    """to_heads: (B, S, P H Dh) -> (P, B*H, S, Dh) with C-contiguous parts, the head-major copy the
    batched products take; from_heads merges them back, bit for bit (odd head widths move in
    narrower words than 8 bytes)."""
    rng = np.random.default_rng(seed)
    a = ref.randn(rng, (b, s, parts * heads * dh), dtype, contiguous)
    got = backend.K.to_heads(backend.to_dev(a), parts, heads)
    assert got.shape == (parts, b * heads, s, dh) and all(got[p].flags.c_contiguous for p in range(parts))
    want = a.reshape(b, s, parts, heads, dh).transpose(2, 0, 3, 1, 4).reshape(parts, b * heads, s, dh)
    np.testing.assert_array_equal(backend.to_host(got), want)
    out = backend.xp.full((b, s, parts * heads * dh), np.nan, dtype)
    assert backend.K.from_heads(backend.xp.ascontiguousarray(got), out) is out
    np.testing.assert_array_equal(backend.to_host(out), a)
