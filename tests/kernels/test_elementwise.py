"""bias_act_, linear_act, bias_glu and residual_layer_norm on every backend against the float64
references: empty and size-1 shapes, odd widths, up to three leading dims, strided inputs, every
dtype of the backend, NaN and +-inf."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import choice, dtypes, given_backend
from minifuse.kernels.activations import GATES, NAMES
from tests.kernels import reference as ref

DIM = choice([0, 1, 2, 3, 7, 16, 33])
# leading dims, 0 = an empty batch; the simulator runs a block per LayerNorm row: at most 9 rows
LEAD = lambda b: st.lists(st.sampled_from(b.pick([0, 1, 2, 3, 5], [0, 1, 3])), min_size=0,  # noqa: E731
                          max_size=b.pick(3, 2)).map(tuple)
SEED = st.integers(0, 2**32 - 1)
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 50.0, -50.0, 1e-30, -90.0, 90.0, -100.0]


def check(backend, actual, expected, dtype, rtol=None):
    ref.assert_close(backend.to_host(actual), expected, backend.rtol(dtype) if rtol is None else rtol)


@given_backend(dtype=dtypes, n=choice([0, 1, 3, 17]), m=DIM, act=st.sampled_from(NAMES), with_bias=st.booleans(),
               seed=SEED)
def test_bias_act(backend, dtype, n, m, act, with_bias, seed):
    rng = np.random.default_rng(seed)
    y = ref.randn(rng, (n, m), dtype, scale=3)
    bias = ref.randn(rng, (m,), dtype, contiguous=bool(seed % 2)) if with_bias else None
    expected = ref.bias_act(y, bias, act)
    yd = backend.to_dev(y)
    assert backend.K.bias_act_(yd, backend.to_dev(bias), act) is yd
    check(backend, yd, expected, dtype)


@pytest.mark.parametrize("act", NAMES)
def test_bias_act_nan_inf_and_extremes(backend, dtype, act):
    y = np.array([SPECIAL], dtype)
    expected = ref.bias_act(y, None, act)
    yd = backend.to_dev(y)
    backend.K.bias_act_(yd, None, act)
    check(backend, yd, expected, dtype)
    y = backend.to_dev(np.array([SPECIAL], dtype))          # NaN in the bias spreads down its column
    backend.K.bias_act_(y, backend.to_dev(np.full(len(SPECIAL), np.nan, dtype)), act)
    assert np.isnan(backend.to_host(y)).all()


@given_backend(dtype=dtypes, lead=LEAD, k=DIM, m=DIM, act=st.sampled_from(NAMES), with_bias=st.booleans(),
               contiguous=st.booleans(), seed=SEED)
def test_linear_act(backend, dtype, lead, k, m, act, with_bias, contiguous, seed):
    rng = np.random.default_rng(seed)
    x = ref.randn(rng, lead + (k,), dtype, contiguous)
    w = ref.randn(rng, (m, k), dtype, scale=max(k, 1) ** -0.5)
    b = ref.randn(rng, (m,), dtype) if with_bias else None
    out = backend.K.linear_act(*map(backend.to_dev, (x, w, b)), act)
    check(backend, out, ref.linear_act(x, w, b, act), dtype)


@pytest.mark.parametrize("act", ["none", "gelu_tanh"])
def test_linear_act_3d(backend, dtype, rng, act):
    x, w, b = ref.randn(rng, (2, 3, 8), dtype), ref.randn(rng, (6, 8), dtype), ref.randn(rng, 6, dtype)
    check(backend, backend.K.linear_act(*map(backend.to_dev, (x, w, b)), act), ref.linear_act(x, w, b, act), dtype)


def test_linear_act_out_buffer_and_transposed_x(backend, rng):
    x = ref.randn(rng, (6, 5), np.float64).T                  # (5, 6), F-ordered view
    w = ref.randn(rng, (4, 6), np.float64)
    out = backend.to_dev(np.full((5, 4), np.nan))
    assert backend.K.linear_act(backend.to_dev(x), backend.to_dev(w), None, "gelu", out=out) is out
    check(backend, out, ref.linear_act(x, w, None, "gelu"), np.float64)


def test_linear_act_nan_inf_rows(backend, rng):
    x = ref.randn(rng, (4, 8), np.float32)
    x[1, 3], x[2, 0] = np.nan, np.inf
    w = np.abs(ref.randn(rng, (5, 8), np.float32)) + 0.1      # positive: inf stays +inf
    out = backend.to_host(backend.K.linear_act(*map(backend.to_dev, (x, w, ref.randn(rng, (5,), np.float32))),
                                               "gelu_tanh"))
    expected = ref.linear_act(x, w, None, "gelu_tanh")
    assert np.isnan(out[1]).all() and np.isposinf(out[2]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))


@given_backend(dtype=dtypes, lead=LEAD, h=DIM, gate=st.sampled_from(GATES), with_bias=st.booleans(),
               contiguous=st.booleans(), seed=SEED)
def test_bias_glu(backend, dtype, lead, h, gate, with_bias, contiguous, seed):
    rng = np.random.default_rng(seed)
    y = ref.randn(rng, lead + (2 * h,), dtype, contiguous, scale=3)
    b = ref.randn(rng, (2 * h,), dtype) if with_bias else None
    out = backend.K.bias_glu(backend.to_dev(y), backend.to_dev(b), gate)
    assert out.shape == lead + (h,)
    check(backend, out, ref.bias_glu(y, b, gate), dtype)


@pytest.mark.parametrize("gate", GATES)
def test_bias_glu_3d_and_out_buffer(backend, dtype, rng, gate):
    y, b = ref.randn(rng, (2, 3, 12), dtype), ref.randn(rng, 12, dtype)
    check(backend, backend.K.bias_glu(backend.to_dev(y), backend.to_dev(b), gate), ref.bias_glu(y, b, gate), dtype)
    out = backend.to_dev(np.empty((3, 6), dtype))
    got = backend.K.bias_glu(backend.to_dev(y[0]), None, gate, out=out)
    assert got is out
    check(backend, got, ref.bias_glu(y[0], None, gate), dtype)


def test_bias_glu_first_half_is_the_gate(backend):
    y = np.array([[0.0, 5.0]])        # a = 0 (gate), b = 5: sigmoid(0) * 5 = 2.5; the swap gives 0
    assert backend.to_host(backend.K.bias_glu(backend.to_dev(y), None, "sigmoid"))[0, 0] == 2.5


@pytest.mark.parametrize("gate", GATES)
def test_bias_glu_nan_inf(backend, dtype, gate):
    y = np.array([[np.nan, 1.0, -np.inf, np.inf, 2.0, 3.0, np.nan, 1.0, -1.0, np.inf]], dtype)
    check(backend, backend.K.bias_glu(backend.to_dev(y), None, gate), ref.bias_glu(y, None, gate), dtype)


@given_backend(dtype=dtypes, lead=LEAD, d=DIM, with_residual=st.booleans(), contiguous=st.booleans(),
               offset=st.sampled_from([0.0, 1e3]), seed=SEED)
def test_residual_layer_norm(backend, dtype, lead, d, with_residual, contiguous, offset, seed):
    rng = np.random.default_rng(seed)
    x = ref.randn(rng, lead + (d,), dtype, contiguous) + dtype(offset)    # a large mean tests the variance
    r = ref.randn(rng, lead + (d,), dtype, not contiguous) if with_residual else None
    g, b = ref.randn(rng, (d,), dtype), ref.randn(rng, (d,), dtype)
    out = backend.K.residual_layer_norm(*map(backend.to_dev, (x, r, g, b)), 1e-5)
    ct = backend.compute_dtype(dtype)               # where x + residual is rounded
    xc, rc = x.astype(ct), None if r is None else r.astype(ct)
    tol = backend.layer_norm_rtol(dtype, xc if rc is None else xc + rc)
    check(backend, out, ref.layer_norm(xc, rc, g, b, 1e-5), dtype, tol)


def test_residual_layer_norm_with_and_without_residual(backend, dtype, rng):
    x, r = ref.randn(rng, (2, 2, 20), dtype, scale=2.0), ref.randn(rng, (2, 2, 20), dtype)
    g, b = ref.randn(rng, 20, dtype), ref.randn(rng, 20, dtype)
    dev, ct = backend.to_dev, backend.compute_dtype(dtype)
    check(backend, backend.K.residual_layer_norm(*map(dev, (x, r, g, b)), 1e-5),
          ref.layer_norm(x.astype(ct), r.astype(ct), g, b, 1e-5), dtype)
    check(backend, backend.K.residual_layer_norm(dev(x), None, dev(g), dev(b), 1e-5),
          ref.layer_norm(x, None, g, b, 1e-5), dtype)


@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_layer_norm_float32_accuracy_large_rows(backend, rng, offset):
    """float32 in, float64 reference: the sums are accumulated in float64 (CPU) or pairwise in
    float32 over the row held in registers (CUDA), two-pass variance; 4096 wide (1024 on the
    simulator). Rows of mean 300 and spread 0.01: within 2e-5 on the CPU, within what a float32
    mean allows on CUDA (`Backend.layer_norm_rtol`)."""
    n, d = backend.pick((64, 4096), (1, 1024))
    x = ref.randn(rng, (n, d), np.float32) * 0.01 + np.float32(offset)
    g, b = np.ones(d, np.float32), np.zeros(d, np.float32)
    out = backend.K.residual_layer_norm(*map(backend.to_dev, (x, None, g, b)), 1e-12)
    tol = backend.layer_norm_rtol(np.float32, x, 2e-5)
    check(backend, out, ref.layer_norm(x, None, g, b, 1e-12), np.float32, tol)


def test_layer_norm_long_row_uses_every_register_slot(backend, rng):
    x, g, b = ref.randn(rng, (1, 300), np.float64), ref.randn(rng, 300, np.float64), ref.randn(rng, 300, np.float64)
    check(backend, backend.K.residual_layer_norm(*map(backend.to_dev, (x, None, g, b)), 1e-12),
          ref.layer_norm(x, None, g, b, 1e-12), np.float64)


def test_layer_norm_nan_inf_rows(backend, dtype, rng):
    x = ref.randn(rng, (3, 8), dtype)
    x[0, 2], x[1, 5] = np.nan, np.inf
    g, b = np.ones(8, dtype), np.zeros(8, dtype)
    out = backend.to_host(backend.K.residual_layer_norm(*map(backend.to_dev, (x, None, g, b)), 1e-5))
    expected = ref.layer_norm(x, None, g, b, 1e-5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()


def test_layer_norm_out_buffer(backend, rng):
    x = ref.randn(rng, (2, 3, 5), np.float64)
    out = backend.to_dev(np.empty_like(x))
    g, b = np.ones(5), np.zeros(5)
    xd = backend.to_dev(x)
    assert backend.K.residual_layer_norm(xd, xd, backend.to_dev(g), backend.to_dev(b), 1e-5, out=out) is out
    check(backend, out, ref.layer_norm(x, x, g, b, 1e-5), np.float64)
