"""Fused training functions: gradcheck in float64, equality with the unfused taped composite in
float32 on random shapes, one tape node, NaN propagation, saved arrays, argument errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minifuse as mf
import minifuse.nn.functional as F
from minifuse import fusions as FU
from minifuse.autograd import gradcheck
from minifuse.fusions.activation import BiasAct, GatedUnit
from minifuse.fusions.layer_norm import ResidualLayerNorm
from minifuse.fusions.linear import FusedLinearAct
from minifuse.fusions import node_graphs
from minifuse.fusions.mlp import FusedMLP

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")

ACTS = ["none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "glu", "swiglu"]
EPS = 1e-5


def _make(rng, shape, dtype, noncontig=False):
    """A standard-normal array; noncontig: a strided view (every other element of the last dim)."""
    if noncontig:
        return rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


# Each case: name -> (argument builder, fused function, unfused composite of taped primitives).
# A builder gets (rng, lead, n, dtype, noncontig) and returns the arrays: the first is the
# row-shaped input (lead + (width,)), the rest are parameters or per-row weights.
def _rows(width_of_n):
    def build(rng, lead, n, dtype, noncontig, extra=()):
        return [_make(rng, lead + (width_of_n(n),), dtype, noncontig)] + [
            _make(rng, s(lead, n), dtype) for s in extra]
    return build


def _case(width_of_n, extra, fused, unfused):
    build = _rows(width_of_n)
    return (lambda rng, lead, n, dtype, noncontig: build(rng, lead, n, dtype, noncontig, extra)), fused, unfused


def _linear_case(act, save):
    width = (lambda n: 2 * n) if act in ("glu", "swiglu") else (lambda n: n)
    return _case(lambda n: n + 2, [lambda lead, n: (width(n), n + 2), lambda lead, n: (width(n),)],
                 lambda x, w, b: FU.fused_linear_act(x, w, b, act, save),
                 lambda x, w, b: F.activation(act)(F.linear(x, w, b)))


def _mlp_case(act, save):
    """x (.., n+2) -> hidden n+1 (2(n+1) wide before a gate) -> n outputs; b1 present, b2 too."""
    gated = act in ("glu", "swiglu")
    wide = (lambda n: 2 * (n + 1)) if gated else (lambda n: n + 1)
    return _case(lambda n: n + 2, [lambda lead, n: (wide(n), n + 2), lambda lead, n: (wide(n),),
                                   lambda lead, n: (n, n + 1), lambda lead, n: (n,)],
                 lambda x, w1, b1, w2, b2: FU.fused_mlp(x, w1, b1, w2, b2, act, save),
                 lambda x, w1, b1, w2, b2: F.linear(F.activation(act)(F.linear(x, w1, b1)), w2, b2))


CASES = {
    "bias_gelu_tanh": _case(lambda n: n, [lambda lead, n: (n,)],
                            lambda y, b: FU.bias_gelu(y, b, "tanh"), lambda y, b: F.gelu(y + b, "tanh")),
    "bias_gelu_none": _case(lambda n: n, [lambda lead, n: (n,)],
                            lambda y, b: FU.bias_gelu(y, b, "none"), lambda y, b: F.gelu(y + b, "none")),
    "gelu_no_bias": _case(lambda n: n, [], lambda y: FU.bias_gelu(y, None), lambda y: F.gelu(y, "tanh")),
    "swiglu": _case(lambda n: 2 * n, [], FU.swiglu, F.swiglu),
    "bias_swiglu": _case(lambda n: 2 * n, [lambda lead, n: (2 * n,)], FU.bias_swiglu,
                         lambda y, b: F.swiglu(y + b)),
    "weighted_swiglu": _case(lambda n: 2 * n, [lambda lead, n: lead + (1,)], FU.weighted_swiglu,
                             lambda y, w: F.swiglu(y) * w),
    "residual_layer_norm": _case(lambda n: n + 1, [lambda lead, n: lead + (n + 1,), lambda lead, n: (n + 1,),
                                                   lambda lead, n: (n + 1,)],
                                 lambda x, r, g, b: FU.residual_layer_norm(x, r, g, b, EPS),
                                 lambda x, r, g, b: F.layer_norm(x + r, x.shape[-1], g, b, EPS)),
    "layer_norm_no_residual": _case(lambda n: n + 1, [lambda lead, n: (n + 1,), lambda lead, n: (n + 1,)],
                                    lambda x, g, b: FU.residual_layer_norm(x, None, g, b, EPS),
                                    lambda x, g, b: F.layer_norm(x, x.shape[-1], g, b, EPS)),
    **{f"linear_{act}_{save}": _linear_case(act, save) for act in ACTS for save in ("preact", "recompute")},
    **{f"mlp_{act}_{save}": _mlp_case(act, save) for act in ("none", "relu", "gelu", "gelu_tanh", "swiglu")
       for save in ("preact", "recompute")},
}


def _tensors(arrays):
    return [mf.tensor(a, requires_grad=True) for a in arrays]


def _run(fn, arrays, g):
    """Output and the gradients of every input for upstream gradient g."""
    ts = _tensors(arrays)
    out = fn(*ts)
    out.backward(mf.tensor(g))
    return [out.detach().numpy()] + [t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t in ts]


def _close(a, b, rtol):
    """Within rtol relative, elementwise, with an absolute floor at rtol times the largest value."""
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck_float64(name):
    build, fused, _ = CASES[name]
    arrays = build(np.random.default_rng(0), (2, 3), 3, np.float64, False)
    assert gradcheck(fused, tuple(_tensors(arrays)))


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=20, deadline=None)
@given(lead=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
       n=st.integers(0, 9), noncontig=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_equals_unfused_float32(name, lead, n, noncontig, seed):
    build, fused, unfused = CASES[name]
    rng = np.random.default_rng(seed)
    arrays = build(rng, lead, n, np.float32, noncontig)
    out_shape = unfused(*[mf.tensor(a) for a in arrays]).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    # The taped composite evaluated in float64 is the oracle: in float32 it has its own rounding
    # error, which for a 2-wide LayerNorm (heavy cancellation in dx) reached 3e-4 while the fused
    # kernel stayed within 2e-6 of float64.
    got = _run(fused, arrays, g)
    want = _run(unfused, [a.astype(np.float64) for a in arrays], g.astype(np.float64))
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == np.float32, (k, a.shape, b.shape, a.dtype)
        _close(a, b, 1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_records_one_node(name):
    build, fused, _ = CASES[name]
    ts = _tensors(build(np.random.default_rng(1), (2, 2), 3, np.float32, False))
    out = fused(*ts)
    node = out.grad_fn
    assert node.fn in (BiasAct, GatedUnit, FusedLinearAct, FusedMLP, ResidualLayerNorm)
    leaves = [t for t in node.inputs if t is not None]
    assert len(leaves) == len(ts) and all(a is b for a, b in zip(leaves, ts))


def test_parameter_gradients_explicit():
    """Bias, gamma/beta and per-token weight gradients against their formulas in NumPy."""
    rng = np.random.default_rng(2)
    y, b, g = rng.standard_normal((2, 3, 8)), rng.standard_normal(8), rng.standard_normal((2, 3, 4))
    yt, bt = mf.tensor(y, requires_grad=True), mf.tensor(b, requires_grad=True)
    FU.bias_swiglu(yt, bt).backward(mf.tensor(g))
    np.testing.assert_allclose(bt.grad.numpy(), yt.grad.numpy().sum(axis=(0, 1)), rtol=1e-12)
    w = rng.standard_normal((2, 3, 1))
    yt, wt = mf.tensor(y, requires_grad=True), mf.tensor(w, requires_grad=True)
    FU.weighted_swiglu(yt, wt).backward(mf.tensor(g))
    a, v = y[..., :4], y[..., 4:]
    sw = a / (1 + np.exp(-a)) * v
    np.testing.assert_allclose(wt.grad.numpy(), (sw * g).sum(-1, keepdims=True), rtol=1e-12)
    x, r = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    gam, bet, g = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal((5, 6))
    ts = [mf.tensor(a, requires_grad=True) for a in (x, r, gam, bet)]
    FU.residual_layer_norm(*ts, eps=EPS).backward(mf.tensor(g))
    v = x + r
    xhat = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + EPS)
    np.testing.assert_allclose(ts[2].grad.numpy(), (g * xhat).sum(0), rtol=1e-10)
    np.testing.assert_allclose(ts[3].grad.numpy(), g.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(ts[0].grad.numpy(), ts[1].grad.numpy())


@pytest.mark.parametrize("name", ["bias_gelu_tanh", "bias_gelu_none", "bias_swiglu", "weighted_swiglu",
                                  "residual_layer_norm", "linear_gelu_preact", "linear_swiglu_recompute"])
def test_nan_propagates_like_unfused(name):
    build, fused, unfused = CASES[name]
    rng = np.random.default_rng(3)
    arrays = build(rng, (4,), 4, np.float32, False)
    arrays[0][1, 2] = np.nan
    out_shape = unfused(*[mf.tensor(a) for a in arrays]).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    got, want = _run(fused, arrays, g), _run(unfused, arrays, g)
    assert np.isnan(got[0]).any()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


# the store dtype and how far the gradients may move: 1% of the largest gradient for float16
# (2^-11 relative rounding of the input), 3% for bfloat16 (2^-8; measured at most 0.62%)
STORES = [pytest.param(np.dtype(np.float16), 1e-2, id="float16"),
          pytest.param(mf.bfloat16, 3e-2, id="bfloat16",
                       marks=pytest.mark.skipif(mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes"))]


def _saved(out):
    """The arrays out's node keeps for backward (a node run through ``node_graphs``: those of the
    state it saved)."""
    saved = out.grad_fn._saved
    return node_graphs.kept(saved[0]) if out.grad_fn.fn is FusedMLP else saved


@pytest.mark.parametrize("store, rtol", STORES)
@pytest.mark.parametrize("name", ["bias_gelu_tanh", "bias_gelu_none", "bias_swiglu", "residual_layer_norm",
                                  "linear_swiglu_preact", "linear_gelu_tanh_recompute", "mlp_gelu_preact",
                                  "mlp_swiglu_recompute"])
def test_input_store_half(name, store, rtol):
    """Saved activations are float16 (bfloat16); gradients move by about that dtype's rounding of
    the input."""
    build, fused, _ = CASES[name]
    rng = np.random.default_rng(4)
    arrays = build(rng, (64,), 16, np.float32, False)
    ts = _tensors(arrays)
    out = _with_store(name, ts, store)
    assert any(a is not None and getattr(a, "dtype", None) == store for a in _saved(out))
    g = rng.standard_normal(out.shape).astype(np.float32)
    got = _run(lambda *t: _with_store(name, t, store), arrays, g)
    want = _run(fused, arrays, g)
    np.testing.assert_array_equal(got[0], want[0])        # forward is unaffected
    for a, b in zip(got[1:], want[1:]):
        _close(a, b, rtol)


def _with_store(name, ts, dtype):
    if name.startswith("bias_gelu"):
        return FU.bias_gelu(*ts, approximate=name.rsplit("_", 1)[1], input_store_dtype=dtype)
    if name == "bias_swiglu":
        return FU.bias_swiglu(*ts, input_store_dtype=dtype)
    if name == "residual_layer_norm":
        return FU.residual_layer_norm(*ts, eps=EPS, input_store_dtype=dtype)
    kind, rest = name.split("_", 1)
    act, save = rest.rsplit("_", 1)
    fn = FU.fused_linear_act if kind == "linear" else FU.fused_mlp
    return fn(*ts, activation=act, save=save, input_store_dtype=dtype)


def test_input_store_float32_for_float64_passes_gradcheck():
    rng = np.random.default_rng(5)
    x, w, b = (mf.tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4), (6, 4), (6,)))
    assert gradcheck(lambda x, w, b: FU.fused_linear_act(x, w, b, "swiglu", "recompute", mf.float32),
                     (x, w, b), atol=1e-4)


def test_saved_arrays():
    rng = np.random.default_rng(6)
    x, w = mf.tensor(rng.standard_normal((5, 4)).astype(np.float32)), \
        mf.tensor(rng.standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    kept = lambda out: [a.shape for a in _saved(out) if a is not None]  # noqa: E731
    assert kept(FU.fused_linear_act(x, w, None, "gelu", "preact")) == [(5, 4), (6, 4), (5, 6)]
    assert kept(FU.fused_linear_act(x, w, None, "gelu", "recompute")) == [(5, 4), (6, 4)]
    assert kept(FU.fused_linear_act(x, w, None, "none", "preact")) == [(5, 4), (6, 4)]
    w2 = mf.tensor(rng.standard_normal((2, 6)).astype(np.float32))
    assert kept(FU.fused_mlp(x, w, None, w2, None, "gelu", "preact")) == [(5, 4), (6, 4), (2, 6), (5, 6)]
    assert kept(FU.fused_mlp(x, w, None, w2, None, "gelu", "recompute")) == [(5, 4), (6, 4), (2, 6)]
    xt = mf.tensor(x.numpy(), requires_grad=True)
    gam, bet = mf.ones(4), mf.zeros(4)
    assert kept(FU.residual_layer_norm(xt, xt, gam, bet)) == [(5, 4), (5,), (4,)]


def test_no_grad_records_nothing():
    x = mf.randn(3, 8, requires_grad=True)
    with mf.no_grad():
        out = FU.swiglu(x)
    assert out.grad_fn is None and not out.requires_grad


@pytest.mark.parametrize("call, error, match", [
    (lambda: FU.bias_gelu(np.ones((2, 3)), None), TypeError, "'y' must be a Tensor"),
    (lambda: FU.bias_gelu(mf.ones(2, 3), mf.ones(4)), ValueError, r"'bias' has shape \(4,\), expected \(M,\)"),
    (lambda: FU.bias_gelu(mf.ones(2, 3), mf.ones(3, dtype=mf.float64)), TypeError, "'bias' has dtype float64"),
    (lambda: FU.bias_gelu(mf.ones(2, 3), None, "erf"), ValueError, "'approximate' must be one of"),
    (lambda: FU.bias_gelu(mf.ones(2, 3, dtype=mf.float16), None), TypeError, "'y' must be float32 or float64"),
    (lambda: FU.swiglu(mf.ones(2, 3)), ValueError, "'y' last dim must be even"),
    (lambda: FU.swiglu(mf.ones(())), ValueError, "'y' needs at least 1 dims"),
    (lambda: FU.weighted_swiglu(mf.ones(2, 4), mf.ones(2)), ValueError, r"'weights' has shape \(2,\)"),
    (lambda: FU.bias_swiglu(mf.ones(2, 4), mf.ones(2)), ValueError, r"'bias' has shape \(2,\), expected \(2H,\)"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(4, 5)), ValueError, r"'weight' has shape \(4, 5\)"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(5, 3), None, "swiglu"), ValueError, "even number"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(4, 3), None, "gelu", "never"), ValueError, "'save'"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(4, 3), None, "elu"), ValueError, "'activation'"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(4, 3), None, "relu", "preact", "int8"), ValueError,
     "'input_store_dtype' must be a floating dtype"),
    (lambda: FU.fused_linear_act(mf.ones(2, 3), mf.ones(4, 3), None, "relu", "preact", mf.float64), ValueError,
     "no wider than"),
    (lambda: FU.fused_mlp(mf.ones(2, 3), mf.ones(4, 3), None, mf.ones(2, 3), None), ValueError,
     r"'w2' has shape \(2, 3\), expected \(N, 4\)"),
    (lambda: FU.fused_mlp(mf.ones(2, 3), mf.ones(4, 3), None, mf.ones(2, 4), None, "swiglu"), ValueError,
     r"expected \(N, 2\)"),
    (lambda: FU.fused_mlp(mf.ones(2, 3), mf.ones(4, 3), mf.ones(3), mf.ones(2, 4), None), ValueError, "'b1' has shape"),
    (lambda: FU.fused_mlp(mf.ones(2, 3), mf.ones(4, 3), None, mf.ones(2, 4), mf.ones(3)), ValueError,
     "'b2' has shape"),
    (lambda: FU.residual_layer_norm(mf.ones(2, 3), mf.ones(3, 2), mf.ones(3), mf.ones(3)), ValueError,
     "'residual' has shape"),
    (lambda: FU.residual_layer_norm(mf.ones(2, 3), None, None, mf.ones(3)), TypeError, "'gamma' must be"),
    (lambda: FU.residual_layer_norm(mf.ones(2, 3), None, mf.ones(3), mf.ones(3), -1.0), ValueError, "'eps'"),
] + ([] if mf.bfloat16 is None else [          # bfloat16 is a dtype of the CUDA kernels, not the CPU's
    (lambda: FU.bias_gelu(mf.ones(2, 3, dtype=mf.bfloat16), None), TypeError,
     "'y' must be float32 or float64, got bfloat16"),
]))
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- rows moved by an index (packed training) ----------------------------------------------------

def test_gather_and_scatter_rows_gradcheck_and_values():
    rng = np.random.default_rng(3)
    x = mf.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    index = np.array([5, 0, 2, 3])
    assert gradcheck(lambda x: FU.gather_rows(x, index), (x,))
    np.testing.assert_array_equal(FU.gather_rows(x, index).detach().numpy(), x.detach().numpy().reshape(6, 4)[index])
    rows = mf.tensor(rng.standard_normal((4, 4)), requires_grad=True)
    assert gradcheck(lambda r: FU.scatter_rows(r, index, 7), (rows,))
    out = FU.scatter_rows(rows, index, 7).detach().numpy()
    np.testing.assert_array_equal(out[index], rows.detach().numpy())
    assert not out[[1, 4, 6]].any()
    empty = FU.scatter_rows(mf.zeros(0, 4), np.zeros(0, np.int64), 3)
    assert empty.shape == (3, 4) and not empty.numpy().any()


@pytest.mark.parametrize("index, error, message", [
    (np.array([0, 6]), ValueError, r"'index' values must be in \[0, 6\)"),
    (np.array([1, 1]), ValueError, "distinct"),
    (np.array([0.0, 1.0]), TypeError, "1-D integer array"),
    (np.array([[0, 1]]), TypeError, "1-D integer array"),
])
def test_gather_rows_refuses_bad_indices(index, error, message):
    with pytest.raises(error, match=message):
        FU.gather_rows(mf.zeros(2, 3, 4), index)


def test_scatter_rows_refuses_bad_arguments():
    rows = mf.zeros(2, 4)
    with pytest.raises(ValueError, match="one per row"):
        FU.scatter_rows(rows, np.array([0]), 3)
    with pytest.raises(ValueError, match="'n' must be an int"):
        FU.scatter_rows(rows, np.array([0, 1]), -1)
    with pytest.raises(ValueError, match="'rows' must be"):
        FU.scatter_rows(mf.zeros(2, 2, 4), np.array([0, 1]), 3)
