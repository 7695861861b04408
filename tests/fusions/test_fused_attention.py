"""fused_attention: gradcheck in float64, equality with the taped attention
(``nn.MultiHeadAttention._attend``) in float32 on drawn shapes and masks, one tape node, what
is saved, NaN propagation, argument errors, and the TransformerLayer's dropout fallback."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
from minifuse import nn
from minifuse import fusions as FU
from minifuse.autograd import gradcheck
from minifuse.fusions.attention import FusedAttention

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")


def _mask(rng, batch, seq):
    """A random 0/1 key mask keeping at least one key per row."""
    m = (rng.random((batch, seq)) < 0.6).astype(np.float64)
    if seq:
        m[np.arange(batch), rng.integers(0, seq, batch)] = 1
    return m


def _grads(attend, qkv, g, mask):
    t = mf.tensor(qkv, requires_grad=True)
    out = attend(t, mask)
    out.backward(mf.tensor(g))
    return out.detach().numpy(), t.grad.numpy()


def _pair(rng, batch, seq, heads, dh, dtype, masked):
    """(fused, taped) outputs and qkv gradients for one draw."""
    qkv = rng.standard_normal((batch, seq, 3 * heads * dh)).astype(dtype)
    g = rng.standard_normal((batch, seq, heads * dh)).astype(dtype)
    mask = _mask(rng, batch, seq) if masked else None
    taped = nn.MultiHeadAttention(heads * dh, heads, dtype=dtype)
    fused = _grads(lambda t, m: FU.fused_attention(t, m, heads), qkv, g, mask)
    return fused, _grads(taped._attend, qkv, g, mask)


@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_float64(masked):
    rng = np.random.default_rng(1)
    qkv = mf.tensor(rng.standard_normal((2, 3, 3 * 2 * 2)), requires_grad=True)
    mask = np.array([[1, 1, 1], [1, 0, 1]]) if masked else None
    assert gradcheck(lambda t: FU.fused_attention(t, mask, 2), (qkv,))


def test_gradcheck_fast_mode_custom_scale():
    rng = np.random.default_rng(2)
    qkv = mf.tensor(rng.standard_normal((2, 5, 3 * 3 * 4)), requires_grad=True)
    mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]])
    assert gradcheck(lambda t: FU.fused_attention(t, mask, 3, scale=0.3), (qkv,), fast_mode=True)


def test_all_padded_row_like_taped():
    """Every key padded: P is uniform (the scores drown in finfo.min) and finite, as HF BERT. Not
    gradchecked: finite differences of q and k vanish in the rounding of score + finfo.min, while
    the analytic gradient (taped and fused alike) treats the mask as an added constant."""
    rng = np.random.default_rng(8)
    qkv = rng.standard_normal((2, 4, 3 * 2 * 3))
    g = rng.standard_normal((2, 4, 6))
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0]])
    taped = nn.MultiHeadAttention(6, 2, dtype=mf.float64)
    got = _grads(lambda t, m: FU.fused_attention(t, m, 2), qkv, g, mask)
    want = _grads(taped._attend, qkv, g, mask)
    for a, b in zip(got, want):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(0, 3), seq=st.integers(0, 6), heads=st.integers(1, 3), dh=st.integers(0, 4),
       masked=st.booleans(), seed=st.integers(0, 2**16))
def test_equals_taped_float32(batch, seq, heads, dh, masked, seed):
    rng = np.random.default_rng(seed)
    (out, grad), (want_out, want_grad) = _pair(rng, batch, seq, heads, dh, np.float32, masked)
    np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want_grad).max(initial=0))))


def test_equals_taped_float64():
    (out, grad), (want_out, want_grad) = _pair(np.random.default_rng(3), 2, 7, 3, 5, np.float64, True)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-13)


def test_one_node_saving_no_seq_by_seq_array():
    qkv = mf.tensor(np.random.default_rng(4).standard_normal((2, 6, 3 * 8)).astype(np.float32), requires_grad=True)
    out = FU.fused_attention(qkv, np.ones((2, 6)), 2)
    node = out.grad_fn
    assert node.fn is FusedAttention and node.inputs[0] is qkv and node.inputs[0].grad_fn is None
    shapes = sorted(a.shape for a in node._saved)
    # q, k, v and the output head-major (B*H, S, Dh), row max and row sum (B, H, S), the additive
    # mask (B, S): no (S, S) scores
    assert shapes == sorted([(4, 6, 4)] * 4 + [(2, 2, 6), (2, 2, 6), (2, 6)])


def test_no_grad_records_nothing():
    qkv = mf.tensor(np.ones((1, 2, 6), np.float32), requires_grad=True)
    with mf.no_grad():
        out = FU.fused_attention(qkv, None, 1)
    assert out.grad_fn is None


@pytest.mark.parametrize("where", [0, 1, 2])          # a NaN in q, in k, in v
def test_nan_propagates_like_taped(where):
    rng = np.random.default_rng(5)
    heads, dh, seq = 2, 3, 4
    qkv = rng.standard_normal((2, seq, 3 * heads * dh)).astype(np.float32)
    qkv[1, 2, where * heads * dh + 1] = np.nan
    g = rng.standard_normal((2, seq, heads * dh)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 1]])
    taped = nn.MultiHeadAttention(heads * dh, heads)
    got = _grads(lambda t, m: FU.fused_attention(t, m, heads), qkv, g, mask)
    want = _grads(taped._attend, qkv, g, mask)
    for a, b in zip(got, want):
        assert np.isnan(b).any()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


QKV = mf.tensor(np.zeros((2, 3, 12), np.float32))


@pytest.mark.parametrize("call, error, match", [
    (lambda: FU.fused_attention(np.zeros((2, 3, 12)), None, 2), TypeError, "'qkv' must be a Tensor"),
    (lambda: FU.fused_attention(mf.tensor(np.zeros((2, 3, 12), np.int64)), None, 2), TypeError, "'qkv'"),
    (lambda: FU.fused_attention(mf.tensor(np.zeros((6, 12), np.float32)), None, 2), ValueError, "'qkv' must be"),
    (lambda: FU.fused_attention(QKV, None, 5), ValueError, "'qkv' last dim"),
    (lambda: FU.fused_attention(QKV, None, 0), ValueError, "'num_heads'"),
    (lambda: FU.fused_attention(QKV, None, 2.0), ValueError, "'num_heads'"),
    (lambda: FU.fused_attention(QKV, np.ones((2, 4)), 2), ValueError, "'key_mask'"),
    (lambda: FU.fused_attention(QKV, [[1, 1, 1]] * 2, 2), TypeError, "'key_mask'"),
    (lambda: FU.fused_attention(QKV, None, 2, scale="x"), TypeError, "'scale'"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=f"fused_attention: {match}"):
        call()


def test_mask_may_be_a_tensor():
    qkv = mf.tensor(np.random.default_rng(6).standard_normal((2, 3, 12)).astype(np.float32))
    mask = np.array([[1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(FU.fused_attention(qkv, mf.tensor(mask), 2).numpy(),
                                  FU.fused_attention(qkv, mask, 2).numpy())


def test_layer_with_attention_dropout_keeps_taped_attention():
    mf.manual_seed(7)
    layer = nn.TransformerLayer(8, 2, 16, dropout=0.1, fused_training=True)
    out = layer(mf.randn(2, 3, 8))
    seen, stack, kinds = set(), [out.grad_fn], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        kinds.add(n.fn.__name__)
        stack.extend(t.grad_fn for t in n.inputs if t is not None)
    assert "FusedAttention" not in kinds and "ResidualLayerNorm" in kinds
