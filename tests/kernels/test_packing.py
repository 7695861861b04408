"""Packed sequences on every backend: pack / unpack, variable-length attention and the packed
transformer layer, against the float64 references run one sequence at a time and against the
padded layer."""
import contextlib
import re

import numpy as np
import pytest
from hypothesis import strategies as st

from backends import choice, dtypes, given_backend
from minifuse.kernels.packing import offsets
from tests.kernels import reference as ref
from tests.kernels.test_layers import _layer_weights

SEED = st.integers(0, 2**32 - 1)
METHODS = st.sampled_from(["loop", "bmm"])
MASKS = st.sampled_from(["right", "left", "scattered", "one_empty", "all_empty", "full"])


def _mask(rng, b, s, kind):
    """A (B, S) 0/1 mask: right padding (as tokenizers make), left, holes, a sequence without
    tokens, none at all, no padding."""
    lengths = rng.integers(0, s + 1, b)
    m = np.arange(s)[None, :] < lengths[:, None]
    if kind == "left":
        m = m[:, ::-1]
    elif kind == "scattered":
        m = rng.random((b, s)) < 0.6
    elif kind == "one_empty" and b:
        m[0] = False
    elif kind == "all_empty":
        m[:] = False
    elif kind == "full":
        m[:] = True
    return m.astype(rng.choice([np.int64, np.float32, bool]))


ROUTES = ["padded", "varlen"]


@contextlib.contextmanager
def _route(backend, route):
    """CUDA's attention of packed rows by one route (padded to the longest sequence, or the
    variable-length kernel), whatever the lengths would choose; the CPU has one."""
    if backend.name != "cuda":
        yield
        return
    from minifuse.kernels.cuda import packing
    old = packing.PAD_WORK_RATIO
    packing.PAD_WORK_RATIO = float("inf") if route == "padded" else 0.0
    try:
        yield
    finally:
        packing.PAD_WORK_RATIO = old


def _varlen_reference(qkv, cu, heads, scale, dtype):
    """Attention of each sequence's rows alone (the padded reference without a mask)."""
    out = np.zeros((qkv.shape[0], qkv.shape[1] // 3))
    for lo, hi in zip(cu[:-1], cu[1:]):
        if hi > lo:
            out[lo:hi] = ref.attention_packed(qkv[None, lo:hi], None, heads, scale, dtype)[0]
    return out


@given_backend(dtype=dtypes, b=choice([0, 1, 2, 3], [0, 1, 2]), s=choice([1, 2, 5, 9], [1, 3]),
               d=choice([1, 3, 8], [1, 3]), mask=MASKS, contiguous=st.booleans(), seed=SEED)
def test_pack_unpack(backend, dtype, b, s, d, mask, contiguous, seed):
    rng = np.random.default_rng(seed)
    x = ref.randn(rng, (b, s, d), dtype, contiguous)
    m = _mask(rng, b, s, mask)
    rows, pk = backend.K.pack(backend.to_dev(x), backend.to_dev(m))
    keep = m.astype(bool)
    np.testing.assert_array_equal(backend.to_host(rows), x[keep])
    np.testing.assert_array_equal(pk.cu_seqlens, np.concatenate([[0], np.cumsum(keep.sum(1))]))
    assert pk.max_seqlen == (keep.sum(1).max() if b else 0) and pk.tokens == keep.sum()
    back = backend.to_host(backend.K.unpack(rows, pk))
    np.testing.assert_array_equal(back, np.where(keep[..., None], x, 0))


@given_backend(dtype=dtypes, b=choice([0, 1, 2, 3], [0, 1, 2]), s=choice([1, 4, 7], [1, 3]),
               heads=choice([1, 2, 3], [1, 2]), dh=choice([1, 3, 8], [1, 4]), mask=MASKS, contiguous=st.booleans(),
               method=METHODS, route=st.sampled_from(ROUTES), seed=SEED)
def test_attention_varlen(backend, dtype, b, s, heads, dh, mask, contiguous, method, route, seed):
    rng = np.random.default_rng(seed)
    cu, _ = offsets(_mask(rng, b, s, mask))
    qkv = ref.randn(rng, (int(cu[-1]), 3 * heads * dh), dtype, contiguous, scale=2)
    with _route(backend, route):
        out = backend.K.attention_varlen(backend.to_dev(qkv), cu, heads, 0.4, method=method)
    ref.assert_close(backend.to_host(out), _varlen_reference(qkv, cu, heads, 0.4, dtype), backend.rtol(dtype))


# Lengths around the CPU kernel's blocks (4 query rows, 16 keys) and head dims on both sides of
# its compiled-for-the-head-dim code (32, 64; others run the general loops). The simulator runs
# each CUDA thread in Python: there, short sequences.
BLOCK_LENGTHS = [0, 1, 3, 4, 5, 15, 16, 17, 33, 70]


def _block_lengths(backend):
    return st.lists(st.sampled_from(backend.pick(BLOCK_LENGTHS, [0, 1, 3, 5])), min_size=1, max_size=4)


@given_backend(examples=15, dtype=dtypes, lengths=_block_lengths, heads=choice([1, 2], [1]),
               dh=choice([1, 5, 32, 64], [1, 32]), contiguous=st.booleans(), seed=SEED)
def test_attention_varlen_blocks_and_head_dims(backend, dtype, lengths, heads, dh, contiguous, seed):
    rng = np.random.default_rng(seed)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = ref.randn(rng, (int(cu[-1]), 3 * heads * dh), dtype, contiguous, scale=2)
    scale = 1 / np.sqrt(dh)      # scores of a few units at any head dim, as attention's own scale keeps them
    out = backend.K.attention_varlen(backend.to_dev(qkv), cu, heads, scale, method="loop")
    ref.assert_close(backend.to_host(out), _varlen_reference(qkv, cu, heads, scale, dtype), backend.rtol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dh", [5, 32, 64])
@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_cpu_attention_varlen_any_split_of_the_rows(dtype, dh, workers):
    """The CPU kernel cuts the rows of all (sequence, head) pairs into equal-work shares, one per
    thread: any number of shares (boundaries inside sequences and heads) gives the same result,
    and a NaN query / an inf key stays in its row / its sequence's head."""
    from minifuse.kernels.cpu.packing import _attention_varlen
    rng = np.random.default_rng(dh * 10 + workers)
    cu = np.array([0, 70, 70, 87, 88, 121])
    heads = 2
    qkv = ref.randn(rng, (121, 3 * heads * dh), dtype, scale=2)
    qkv[3, 0] = np.nan                          # sequence 0, head 0, row 3
    qkv[100, heads * dh + dh + 1] = np.inf      # a key of the last sequence, head 1
    expected = _varlen_reference(qkv, cu, heads, 0.3, dtype)
    out = np.full((121, heads * dh), 7.0, dtype)
    _attention_varlen(qkv, cu, heads, dtype(0.3), out, workers)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[3, :dh]).all() and np.isfinite(out[:3]).all() and np.isfinite(out[70:88]).all()
    ref.assert_close(out, expected, 1e-10 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["loop", "bmm"])
def test_attention_varlen_nan_inf_stay_in_their_sequence(backend, dtype, method, route, rng):
    cu = np.array([0, 3, 3, 5])
    qkv = ref.randn(rng, (5, 12), dtype)
    qkv[0, 0] = np.nan              # a query of sequence 0, head 0: that row
    qkv[4, 4 + 3] = np.inf          # a key of sequence 2, head 1: that sequence's rows of head 1
    expected = _varlen_reference(qkv, cu, 2, 0.5, dtype)
    with _route(backend, route):
        out = backend.to_host(backend.K.attention_varlen(backend.to_dev(qkv), cu, 2, 0.5, method=method))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isfinite(out[1:3]).all()
    ref.assert_close(out, expected, backend.rtol(dtype))


@given_backend(examples=15, dtype=dtypes, b=choice([0, 1, 3], [0, 1, 2]), s=choice([1, 3, 8], [1, 3]),
               heads=choice([1, 2], [1, 2]), dh=choice([1, 4], [1, 4]), mask=MASKS, biases=st.booleans(),
               method=METHODS, seed=SEED)
def test_transformer_layer_varlen_is_the_padded_layer(backend, dtype, b, s, heads, dh, mask, biases, method, seed):
    """Packed rows through the layer, unpacked: the padded layer's output (zeros at padding)."""
    rng = np.random.default_rng(seed)
    d = heads * dh
    x = ref.randn(rng, (b, s, d), dtype)
    weights = _layer_weights(rng, d, 2 * d, dtype, biases)
    m = _mask(rng, b, s, mask)
    K, dev = backend.K, backend.to_dev
    rows, pk = K.pack(dev(x), dev(m))
    packed = K.unpack(K.transformer_layer_varlen(rows, pk, weights.map(dev), heads, 1e-12, "gelu", method), pk)
    padded = K.transformer_layer(dev(x), weights.map(dev), dev(m), heads, 1e-12, "gelu", method)
    expected = ref.transformer_layer(x, weights, m, heads, 1e-12, "gelu", dtype)
    ref.assert_close(backend.to_host(packed), expected, backend.layer_rtol(dtype))
    ref.assert_close(backend.to_host(packed), backend.to_host(padded), backend.rtol(dtype))
    assert not backend.to_host(packed)[~m.astype(bool)].any()


@pytest.mark.parametrize("values, error", [
    ([[1, 2]], "(padding) and 1 (keep), got values such as [2]"),
    ([[1, 0.5]], "values such as [0.5]"),
    ([[1, np.nan]], "values such as [nan]"),
    ([[1, -1]], "values such as [-1]"),
])
def test_mask_values_other_than_0_and_1_are_refused(backend, values, error):
    x = backend.to_dev(np.zeros((1, 2, 4)))
    mask = backend.to_dev(np.array(values))
    for call in (lambda: backend.K.pack(x, mask),
                 lambda: backend.K.attention_packed(backend.xp.zeros((1, 2, 12)), mask, 2, 1.0)):
        with pytest.raises(ValueError, match="'key_mask' must hold only 0 .*" + re.escape(error)):
            call()


def test_bad_packed_arguments(backend):
    K, xp = backend.K, backend.xp
    with pytest.raises(TypeError, match="key_mask' must be bool or numbers"):
        K.pack(xp.zeros((1, 2, 4)), np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"'cu_seqlens' must rise from 0 to the number of rows 3"):
        K.attention_varlen(xp.zeros((3, 6)), np.array([0, 2]), 1, 1.0)
    with pytest.raises(ValueError, match=r"'cu_seqlens' must rise"):
        K.attention_varlen(xp.zeros((3, 6)), np.array([0, 2, 1, 3]), 1, 1.0)
    with pytest.raises(TypeError, match="'cu_seqlens' must be a 1-D integer array"):
        K.attention_varlen(xp.zeros((3, 6)), np.array([0.0, 3.0]), 1, 1.0)
    rows, pk = K.pack(xp.zeros((2, 3, 4)), backend.to_dev(np.array([[1, 1, 0], [1, 0, 0]])))
    with pytest.raises(ValueError, match=r"'rows' has shape \(2, 4\), expected \(T, d\)"):
        K.unpack(rows[:2], pk)
    with pytest.raises(TypeError, match="'packing' must be a Packing"):
        K.unpack(rows, (0, 3))


def test_cuda_attention_route_follows_the_lengths(backend):
    """Padded to the longest sequence for similar lengths; the variable-length kernel when one long
    sequence would make the padded block many times the sequences' own work."""
    if backend.name != "cuda":
        pytest.skip("the CUDA backend's choice")
    from minifuse.kernels.cuda.packing import PAD_WORK_RATIO, pads
    from minifuse.kernels.packing import Packing

    def packing_of(lengths):
        cu = np.concatenate([[0], np.cumsum(lengths)])
        return Packing(len(lengths), max(lengths), cu, max(lengths), None, None)
    assert pads(packing_of([64, 100, 128, 90]))
    assert pads(packing_of([7] * 32))
    skewed = [512] + [8] * 63
    assert 64 * 512 ** 2 > PAD_WORK_RATIO * (512 ** 2 + 63 * 64) and not pads(packing_of(skewed))
