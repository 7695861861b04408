"""fused_transformer_layer: the post-LN layer as one node. gradcheck in float64 (the input and all
twelve parameters, padded and packed attention); the same output and gradients as the five
fused functions called one by one, on drawn shapes (empty batch, one token, odd widths,
non-contiguous input), with some inputs frozen, twice through a retained graph; NaN
propagation; argument errors. The layers' wiring is in test_wiring.py, CUDA in
tests/cuda/test_fused_training.py."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
from minifuse import fusions as FU
from minifuse.autograd import gradcheck
from minifuse.fusions.layer import FusedLayer
from minifuse.kernels import packing as kernel_packing
from minifuse.kernels.weights import LayerWeights

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")

EPS = 1e-5


def layer_arrays(rng, d, hidden, dtype, bias=True):
    """The twelve parameters of a layer of width d (LayerWeights order), LayerNorm's around 1 and 0."""
    def a(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    ws = [a(3 * d, d), a(3 * d), a(d, d), a(d), 1 + a(d, scale=0.1), a(d, scale=0.1),
          a(hidden, d), a(hidden), a(d, hidden), a(d), 1 + a(d, scale=0.1), a(d, scale=0.1)]
    if not bias:
        for i in (1, 3, 7, 9):
            ws[i] = None
    return ws


def five_nodes(x, w, mask, heads, activation="gelu", save="preact"):
    """The layer as the five fused functions, each its own node: the function FusedLayer computes."""
    qkv = FU.fused_linear_act(x, w.qkv_w, w.qkv_b, "none")
    a = FU.fused_linear_act(FU.fused_attention(qkv, mask, heads), w.out_w, w.out_b, "none")
    h = FU.residual_layer_norm(a, x, w.ln1_g, w.ln1_b, EPS)
    f = FU.fused_mlp(h, w.fc1_w, w.fc1_b, w.fc2_w, w.fc2_b, activation, save)
    return FU.residual_layer_norm(f, h, w.ln2_g, w.ln2_b, EPS)


def one_node(x, w, mask, heads, activation="gelu", save="preact"):
    return FU.fused_transformer_layer(x, w, mask, heads, EPS, activation, save)


def _tensors(arrays, frozen=()):
    return [None if a is None else mf.tensor(a, requires_grad=i not in frozen) for i, a in enumerate(arrays)]


def _grads(layer, x, ws, mask, heads, g, frozen=(), **kw):
    ts = _tensors([x] + ws, frozen)
    out = layer(ts[0], LayerWeights(*ts[1:]), mask, heads, **kw)
    out.backward(mf.tensor(g, device=out.device))
    return out, [np.asarray(out.detach())] + [None if t is None or t.grad is None else t.grad.numpy() for t in ts]


def _assert_close(got, want, rtol):
    for k, (a, b) in enumerate(zip(got, want)):
        if b is None:
            assert a is None, k
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"output/gradient {k}")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(masked, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 1, 1]]) if masked else None
    ts = _tensors([x] + layer_arrays(rng, 4, 6, np.float64, bias))
    assert gradcheck(lambda x, *w: one_node(x, LayerWeights(*w), mask, 2), tuple(ts))


def test_gradcheck_float64_packed_rows():
    """Packed attention: the layer on the real rows (T, d) of a padded batch."""
    rng = np.random.default_rng(1)
    keep = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], bool)
    rows = rng.standard_normal((int(keep.sum()), 4))
    packed = _packed(rows, keep, 2)
    ts = _tensors([rows] + layer_arrays(rng, 4, 6, np.float64))
    assert gradcheck(lambda x, *w: FU.fused_transformer_layer(x, LayerWeights(*w), None, 2, EPS,
                                                              attention=packed(x)), tuple(ts))


def _packed(rows, keep, heads):
    """attention=... for rows packed from a (B, L) block with real positions ``keep``."""
    lengths = keep.sum(1)
    cu = np.concatenate([[0], np.cumsum(lengths)])
    longest = int(lengths.max())
    block = np.repeat(np.arange(len(lengths)) * longest - cu[:-1], lengths) + np.arange(int(cu[-1]))
    real = np.arange(longest)[None, :] < lengths[:, None]
    return lambda x: FU.packed_attention(x, block, len(lengths), longest, real, heads)


def test_packed_rows_equal_the_padded_layer_on_the_real_tokens():
    rng = np.random.default_rng(2)
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    ws = layer_arrays(rng, 8, 12, np.float32)
    _, index = kernel_packing.offsets(mask.astype(bool))
    g = rng.standard_normal((int(mask.sum()), 8)).astype(np.float32)
    rows = x.reshape(-1, 8)[index]
    packed = _packed(rows, mask.astype(bool), 2)
    _, got = _grads(lambda x, w, m, h: FU.fused_transformer_layer(x, w, None, h, EPS, attention=packed(x)),
                    rows, ws, None, 2, g)
    full = np.zeros((12, 8), np.float32)
    full[index] = g
    _, want = _grads(one_node, x, ws, mask, 2, full.reshape(3, 4, 8))
    np.testing.assert_allclose(got[0], want[0].reshape(-1, 8)[index], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1].reshape(-1, 8)[index], rtol=1e-4, atol=1e-5)
    _assert_close(got[2:], want[2:], 1e-4)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(0, 3), seq=st.integers(1, 5), heads=st.sampled_from([1, 2, 3]), dh=st.integers(1, 3),
       hidden=st.integers(1, 9), masked=st.booleans(), bias=st.booleans(), noncontig=st.booleans(),
       activation=st.sampled_from(["relu", "gelu", "gelu_tanh", "silu"]), save=st.sampled_from(["preact", "recompute"]),
       seed=st.integers(0, 2**16))
def test_one_node_equals_the_five_functions_float32(batch, seq, heads, dh, hidden, masked, bias, noncontig,
                                                    activation, save, seed):
    rng = np.random.default_rng(seed)
    d = heads * dh
    x = rng.standard_normal((batch, seq, 2 * d)).astype(np.float32)
    x = x[..., ::2] if noncontig else x[..., :d].copy()
    mask = (rng.random((batch, seq)) < 0.7).astype(np.int64) if masked else None
    if mask is not None and seq:
        mask[:, 0] = 1
    ws = layer_arrays(rng, d, hidden, np.float32, bias)
    g = rng.standard_normal((batch, seq, d)).astype(np.float32)
    out, got = _grads(one_node, x, ws, mask, heads, g, activation=activation, save=save)
    assert out.grad_fn.fn is FusedLayer
    _, want = _grads(five_nodes, x, ws, mask, heads, g, activation=activation, save=save)
    _assert_close(got, want, 1e-5)


@pytest.mark.parametrize("frozen", [(0,), (1, 2), (0, 1, 2, 3, 4), (5, 6, 11, 12), (7, 8, 9, 10)],
                         ids=["x", "qkv", "attention-side", "layer-norms", "mlp"])
def test_frozen_inputs_get_no_gradient_and_the_rest_the_five_functions_gradients(frozen):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4))
    ws = layer_arrays(rng, 4, 5, np.float64)
    g = rng.standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    _, got = _grads(one_node, x, ws, mask, 2, g, frozen)
    _, want = _grads(five_nodes, x, ws, mask, 2, g, frozen)
    for i in frozen:
        assert got[1 + i] is None and want[1 + i] is None
    _assert_close(got, want, 1e-10)


def test_a_retained_graph_gives_the_same_gradients_twice():
    rng = np.random.default_rng(4)
    ts = _tensors([rng.standard_normal((2, 3, 4))] + layer_arrays(rng, 4, 5, np.float64))
    out = one_node(ts[0], LayerWeights(*ts[1:]), None, 2)
    g = mf.tensor(rng.standard_normal(out.shape))
    out.backward(g, retain_graph=True)
    first = [t.grad.numpy().copy() for t in ts]
    out.backward(g)
    for t, a in zip(ts, first):
        np.testing.assert_allclose(t.grad.numpy(), 2 * a, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="FusedLayerBackward: trying to backward through the graph a second"):
        out.backward(g)


def test_nan_propagates_like_the_five_functions():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x[1, 2, 0] = np.nan
    ws = layer_arrays(rng, 4, 5, np.float32)
    g = rng.standard_normal((2, 3, 4)).astype(np.float32)
    _, got = _grads(one_node, x, ws, None, 2, g)
    _, want = _grads(five_nodes, x, ws, None, 2, g)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_no_grad_records_nothing():
    rng = np.random.default_rng(6)
    ts = _tensors([rng.standard_normal((1, 2, 4))] + layer_arrays(rng, 4, 5, np.float64))
    with mf.no_grad():
        out = one_node(ts[0], LayerWeights(*ts[1:]), None, 2)
    assert out.grad_fn is None and not out.requires_grad


def _call(x=None, w=None, mask=None, heads=2, **kw):
    rng = np.random.default_rng(7)
    x = mf.tensor(rng.standard_normal((2, 3, 4)).astype(np.float32)) if x is None else x
    ws = _tensors(layer_arrays(rng, 4, 6, np.float32))
    w = LayerWeights(*ws) if w is None else w(ws)
    return FU.fused_transformer_layer(x, w, mask, heads, **kw)


def _replace(i, value):
    return lambda ws: LayerWeights(*[value(t) if j == i else t for j, t in enumerate(ws)])


@pytest.mark.parametrize("kw, error, match", [
    (dict(w=lambda ws: tuple(ws)), TypeError, "'weights' must be a LayerWeights, got tuple"),
    (dict(w=_replace(2, lambda t: mf.tensor(np.zeros((4, 5), np.float32)))), ValueError,
     r"'out_w' has shape \(4, 5\), expected \(d, d\) = \(4, 4\)"),
    (dict(w=_replace(4, lambda t: None)), TypeError, r"'ln1_g' must be a Tensor of shape \(d,\), got None"),
    (dict(w=_replace(8, lambda t: mf.tensor(np.zeros((4, 5), np.float32)))), ValueError,
     r"'fc2_w' has shape \(4, 5\), expected \(d, F\) = \(4, 6\)"),
    (dict(w=_replace(0, lambda t: t.double())), TypeError, "qkv_w"),
    (dict(x=mf.tensor(np.zeros((3, 4), np.float32))), ValueError, r"'x' must be \(batch, seq, d_model\)"),
    (dict(mask=np.array([[1, 2, 1], [1, 1, 1]])), ValueError, "'key_mask' must hold only 0"),
    (dict(heads=3), ValueError, "num_heads"),
    (dict(activation="swish"), ValueError, "activation"),
    (dict(save="never"), ValueError, "save"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(attention="packed"), TypeError, "'attention' must be a PackedAttention"),
])
def test_bad_arguments(kw, error, match):
    with pytest.raises(error, match=f"^fused_transformer_layer: .*{match}"):
        _call(**kw)
