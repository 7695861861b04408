"""bias_act_, linear_act, bias_glu, residual_layer_norm against the float64 references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifuse.kernels import cpu
from tests.kernels import reference as ref

DTYPES = st.sampled_from([np.float32, np.float64])
DIM = st.sampled_from([1, 2, 3, 7, 16, 33])
LEAD = st.lists(st.sampled_from([0, 1, 2, 3, 5]), min_size=0, max_size=3).map(tuple)   # 0 = empty batch
SEED = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=25, deadline=None)
pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")


@FAST
@given(dtype=DTYPES, n=st.sampled_from([0, 1, 3, 17]), m=DIM, act=st.sampled_from(sorted(cpu.ACTIVATIONS)),
       with_bias=st.booleans(), seed=SEED)
def test_bias_act(dtype, n, m, act, with_bias, seed):
    rng = np.random.default_rng(seed)
    y = ref.randn(rng, (n, m), dtype, scale=3)
    bias = ref.randn(rng, (m,), dtype, contiguous=bool(seed % 2)) if with_bias else None
    expected = ref.bias_act(y, bias, act)
    assert cpu.bias_act_(y, bias, act) is y
    ref.assert_close(y, expected, ref.RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", sorted(cpu.ACTIVATIONS))
def test_bias_act_nan_inf_and_extremes(dtype, act):
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 50.0, -50.0, 1e-30, -90.0, 90.0]
    y = np.array([special], dtype)
    expected = ref.bias_act(y, None, act)
    cpu.bias_act_(y, None, act)
    ref.assert_close(y, expected, ref.RTOL[dtype])
    y = np.array([special], dtype)          # NaN in the bias spreads down its column
    cpu.bias_act_(y, np.full(len(special), np.nan, dtype), act)
    assert np.isnan(y).all()


@FAST
@given(dtype=DTYPES, lead=LEAD, k=DIM, m=DIM, act=st.sampled_from(sorted(cpu.ACTIVATIONS)),
       with_bias=st.booleans(), contiguous=st.booleans(), seed=SEED)
def test_linear_act(dtype, lead, k, m, act, with_bias, contiguous, seed):
    rng = np.random.default_rng(seed)
    x = ref.randn(rng, lead + (k,), dtype, contiguous)
    w = ref.randn(rng, (m, k), dtype, scale=k ** -0.5)
    b = ref.randn(rng, (m,), dtype) if with_bias else None
    out = cpu.linear_act(x, w, b, act)
    ref.assert_close(out, ref.linear_act(x, w, b, act), ref.RTOL[dtype])


def test_linear_act_out_buffer_and_transposed_x(rng):
    x = ref.randn(rng, (6, 5), np.float64).T                  # (5, 6), F-ordered view
    w = ref.randn(rng, (4, 6), np.float64)
    out = np.full((5, 4), np.nan)
    assert cpu.linear_act(x, w, None, "gelu", out=out) is out
    ref.assert_close(out, ref.linear_act(x, w, None, "gelu"), 1e-10)


def test_linear_act_nan_inf_rows(rng):
    x = ref.randn(rng, (4, 8), np.float32)
    x[1, 3], x[2, 0] = np.nan, np.inf
    w = np.abs(ref.randn(rng, (5, 8), np.float32)) + 0.1      # positive: inf stays +inf
    out = cpu.linear_act(x, w, ref.randn(rng, (5,), np.float32), "gelu_tanh")
    expected = ref.linear_act(x, w, None, "gelu_tanh")
    assert np.isnan(out[1]).all() and np.isposinf(out[2]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))


@FAST
@given(dtype=DTYPES, lead=LEAD, h=DIM, gate=st.sampled_from(["sigmoid", "silu"]), with_bias=st.booleans(),
       contiguous=st.booleans(), seed=SEED)
def test_bias_glu(dtype, lead, h, gate, with_bias, contiguous, seed):
    rng = np.random.default_rng(seed)
    y = ref.randn(rng, lead + (2 * h,), dtype, contiguous, scale=3)
    b = ref.randn(rng, (2 * h,), dtype) if with_bias else None
    out = cpu.bias_glu(y, b, gate)
    assert out.shape == lead + (h,)
    ref.assert_close(out, ref.bias_glu(y, b, gate), ref.RTOL[dtype])


def test_bias_glu_first_half_is_the_gate():
    y = np.array([[0.0, 5.0]])        # a = 0 (gate), b = 5: sigmoid(0) * 5 = 2.5; the swap gives 0
    assert cpu.bias_glu(y, None, "sigmoid")[0, 0] == 2.5


@pytest.mark.parametrize("gate", ["sigmoid", "silu"])
def test_bias_glu_nan_inf(gate):
    y = np.array([[np.nan, 1.0, -np.inf, np.inf, 2.0, 3.0, np.nan, 1.0, -1.0, np.inf]], np.float32)
    ref.assert_close(cpu.bias_glu(y, None, gate), ref.bias_glu(y, None, gate), 1e-5)


@FAST
@given(dtype=DTYPES, lead=LEAD, d=DIM, with_residual=st.booleans(), contiguous=st.booleans(),
       offset=st.sampled_from([0.0, 1e3]), seed=SEED)
def test_residual_layer_norm(dtype, lead, d, with_residual, contiguous, offset, seed):
    rng = np.random.default_rng(seed)
    x = ref.randn(rng, lead + (d,), dtype, contiguous) + dtype(offset)    # a large mean tests the variance
    r = ref.randn(rng, lead + (d,), dtype, not contiguous) if with_residual else None
    g, b = ref.randn(rng, (d,), dtype), ref.randn(rng, (d,), dtype)
    out = cpu.residual_layer_norm(x, r, g, b, 1e-5)
    ref.assert_close(out, ref.layer_norm(x, r, g, b, 1e-5), ref.RTOL[dtype])


def test_layer_norm_float32_accuracy_large_rows(rng):
    """float32 in, float64 reference: the sums are accumulated in float64, two-pass variance."""
    x = ref.randn(rng, (64, 4096), np.float32) * 0.01 + np.float32(300.0)
    g, b = np.ones(4096, np.float32), np.zeros(4096, np.float32)
    out = cpu.residual_layer_norm(x, None, g, b, 1e-12)
    ref.assert_close(out, ref.layer_norm(x, None, g, b, 1e-12), 2e-5)


def test_layer_norm_nan_inf_rows(rng):
    x = ref.randn(rng, (3, 8), np.float64)
    x[0, 2], x[1, 5] = np.nan, np.inf
    out = cpu.residual_layer_norm(x, None, np.ones(8), np.zeros(8), 1e-5)
    expected = ref.layer_norm(x, None, np.ones(8), np.zeros(8), 1e-5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()


def test_layer_norm_out_buffer(rng):
    x = ref.randn(rng, (2, 3, 5), np.float64)
    out = np.empty_like(x)
    assert cpu.residual_layer_norm(x, x, np.ones(5), np.zeros(5), 1e-5, out=out) is out
    ref.assert_close(out, ref.layer_norm(x, x, np.ones(5), np.zeros(5), 1e-5), 1e-10)
