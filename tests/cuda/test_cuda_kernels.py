"""Every CUDA kernel against the float64 NumPy references of tests/kernels/reference.py, on tiny
shapes (each simulated block costs tenths of a second), plus the argument checks."""
import warnings

import numpy as np
import pytest

from cudatest import GPU, SIMULATOR, needs_gpu, needs_kernels, to_dev, to_host
from kernels import reference as R

pytestmark = needs_kernels

if SIMULATOR or GPU:
    import minifuse.kernels.cuda as K

# float16 computes in float32 but stores 11-bit mantissas: 1e-3 of the result's scale.
RTOL = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64] + ([np.float16] if GPU else [])


@pytest.fixture(autouse=True)
def quiet_simulator():
    # the simulator evaluates math.exp in NumPy scalars, which warn on overflow to inf
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def check(actual, expected, dtype):
    R.assert_close(to_host(actual), expected, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"])
def test_bias_act(rng, activation, dtype):
    y, b = randn(rng, (3, 40), dtype, 3.0), randn(rng, 40, dtype)
    expected = R.bias_act(y, b, activation)
    yd = to_dev(y)
    assert K.bias_act_(yd, to_dev(b), activation) is yd
    check(yd, expected, dtype)


@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", "silu"])
def test_bias_act_float32_pairs_and_single_lanes(rng, activation):
    """float32 rows of even width run as complex64 pairs (two floats per thread); odd widths and
    views that are not 8-byte aligned run one float per thread. Both, in place and into `out`,
    against the reference; NaN stays NaN in either lane of a pair."""
    from minifuse.kernels.cuda import elementwise as E
    n, m = 5, 40
    flat = to_dev(randn(rng, n * m + 1, np.float32, 3.0))
    b = randn(rng, m, np.float32)
    cases = [("pairs", flat[:n * m].reshape(n, m), b), ("odd width", flat[:n * (m - 1)].reshape(n, m - 1), b[:-1]),
             ("4-byte aligned", flat[1:].reshape(n, m), b)]
    for name, y, bias in cases:
        assert (E._pairs(y) is not None) == (name == "pairs"), name
        y[1, 0], y[2, 1] = np.nan, np.nan
        expected = R.bias_act(to_host(y), bias, activation)
        out = y.copy() * 0
        assert E.apply_bias_act(y, to_dev(bias), activation, out=out) is out
        check(out, expected, np.float32)
        assert K.bias_act_(y, to_dev(bias), activation) is y
        check(y, expected, np.float32)
        assert np.isnan(to_host(y)[[1, 2], [0, 1]]).all(), name


@needs_gpu
def test_launch_fast_path_is_taken_and_equals_numbas_launch(rng):
    """The first launch of a kernel with given argument kinds goes through numba and records the
    compiled kernel (runtime._FAST); the next one marshals the arguments itself: same result."""
    from minifuse.kernels.cuda import runtime
    y, b = to_dev(randn(rng, (5, 40), np.float32, 3.0)), to_dev(randn(rng, 40, np.float32))
    runtime._FAST.clear()
    first = y.copy()
    K.bias_act_(first, b, "gelu_tanh")
    assert len(runtime._FAST) == 1 and all(runtime._FAST.values())
    second = y.copy()
    K.bias_act_(second, b, "gelu_tanh")
    np.testing.assert_array_equal(to_host(second), to_host(first))
    check(second, R.bias_act(to_host(y), to_host(b), "gelu_tanh"), np.float32)


def test_bias_act_extremes_and_no_bias():
    y = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 50.0, -50.0, 1e-30, -100.0, 90.0]],
                 np.float32)
    for act in ("relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"):
        yd = to_dev(y.copy())
        K.bias_act_(yd, None, act)
        expected = R.bias_act(y, None, act)
        got = to_host(yd)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=act)
        finite = ~np.isnan(expected)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-30, err_msg=act)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate", ["sigmoid", "silu"])
def test_bias_glu(rng, gate, dtype):
    y, b = randn(rng, (2, 3, 12), dtype), randn(rng, 12, dtype)
    check(K.bias_glu(to_dev(y), to_dev(b), gate), R.bias_glu(y, b, gate), dtype)
    out = to_dev(np.empty((3, 6), dtype))
    got = K.bias_glu(to_dev(y[0]), None, gate, out=out)
    assert got is out
    check(got, R.bias_glu(y[0], None, gate), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_layer_norm(rng, dtype):
    x, r = randn(rng, (2, 2, 20), dtype, 2.0), randn(rng, (2, 2, 20), dtype)
    g, b = randn(rng, 20, dtype), randn(rng, 20, dtype)
    check(K.residual_layer_norm(*map(to_dev, (x, r, g, b)), 1e-5), R.layer_norm(x, r, g, b, 1e-5), dtype)
    check(K.residual_layer_norm(to_dev(x), None, to_dev(g), to_dev(b), 1e-5),
          R.layer_norm(x, None, g, b, 1e-5), dtype)


def test_layer_norm_long_row_uses_every_register_slot(rng):
    x, g, b = randn(rng, (1, 300), np.float64), randn(rng, 300, np.float64), randn(rng, 300, np.float64)
    check(K.residual_layer_norm(to_dev(x), None, to_dev(g), to_dev(b), 1e-12),
          R.layer_norm(x, None, g, b, 1e-12), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention(rng, dtype):
    q = randn(rng, (2, 2, 3, 4), dtype)
    k, v = randn(rng, (2, 2, 5, 4), dtype), randn(rng, (2, 2, 5, 4), dtype)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int64)
    check(K.attention(*map(to_dev, (q, k, v, mask)), 0.7), R.attention(q, k, v, mask, 0.7, dtype), dtype)
    check(K.attention(*map(to_dev, (q, k, v)), None, 0.5), R.attention(q, k, v, None, 0.5, dtype), dtype)


def test_attention_all_keys_masked_is_uniform(rng):
    q, k, v = (randn(rng, (1, 1, 2, 4), np.float64) for _ in range(3))
    mask = np.zeros((1, 2), bool)
    check(K.attention(*map(to_dev, (q, k, v, mask)), 1.0), R.attention(q, k, v, mask, 1.0, np.float64),
          np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_packed(rng, dtype):
    qkv = randn(rng, (2, 3, 3 * 8), dtype)
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    check(K.attention_packed(to_dev(qkv), to_dev(mask), 2, 0.5), R.attention_packed(qkv, mask, 2, 0.5, dtype),
          dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["none", "gelu_tanh"])
def test_linear_act(rng, activation, dtype):
    x, w, b = randn(rng, (2, 3, 8), dtype), randn(rng, (6, 8), dtype), randn(rng, 6, dtype)
    check(K.linear_act(*map(to_dev, (x, w, b)), activation), R.linear_act(x, w, b, activation), dtype)


@pytest.mark.parametrize("config", ["64x64", "128x128"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_gemm_matches_reference(rng, config, dtype):
    # 70 x 20 @ 20 x 9: edge tiles in every direction, K not a multiple of the k-step
    x, w, b = randn(rng, (70, 20), dtype), randn(rng, (9, 20), dtype), randn(rng, 9, dtype)
    got = K.tiled_linear_act(*map(to_dev, (x, w, b)), "gelu", config=config)
    check(got, R.linear_act(x, w, b, "gelu"), dtype)
    check(K.tiled_linear_act(to_dev(x), to_dev(w), None, "none", config=config),
          R.linear_act(x, w, None, "none"), dtype)


def _layer_params(rng, d, f, dtype):
    s = 1 / np.sqrt(d)
    return dict(qkv_w=randn(rng, (3 * d, d), dtype, s), qkv_b=randn(rng, 3 * d, dtype, 0.1),
                out_w=randn(rng, (d, d), dtype, s), out_b=randn(rng, d, dtype, 0.1),
                ln1_g=1 + randn(rng, d, dtype, 0.1), ln1_b=randn(rng, d, dtype, 0.1),
                fc1_w=randn(rng, (f, d), dtype, s), fc1_b=randn(rng, f, dtype, 0.1),
                fc2_w=randn(rng, (d, f), dtype, 1 / np.sqrt(f)), fc2_b=randn(rng, d, dtype, 0.1),
                ln2_g=1 + randn(rng, d, dtype, 0.1), ln2_b=randn(rng, d, dtype, 0.1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_transformer_layer(rng, dtype):
    x = randn(rng, (2, 3, 8), dtype)
    p = _layer_params(rng, 8, 16, dtype)
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
    got = K.transformer_layer(to_dev(x), **{k: to_dev(v) for k, v in p.items()}, key_mask=to_dev(mask),
                              num_heads=2, eps=1e-5, activation="gelu")
    expected = R.transformer_layer(x, **p, key_mask=mask, num_heads=2, eps=1e-5, activation="gelu",
                                   dtype=dtype)
    R.assert_close(to_host(got), expected, {np.float16: 1e-2}.get(dtype, RTOL[dtype]))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
def test_mlp(rng, activation):
    dtype = np.float64
    x = randn(rng, (2, 2, 6), dtype)
    w1, b1 = randn(rng, (8, 6), dtype), randn(rng, 8, dtype)
    hid = 4 if activation in ("glu", "swiglu") else 8
    w2, b2 = randn(rng, (5, hid), dtype), randn(rng, 5, dtype)
    got = K.mlp(*map(to_dev, (x, w1, b1, w2, b2)), activation)
    check(got, R.mlp(x, w1, b1, w2, b2, activation), dtype)


# ---- argument checks at the Python boundary --------------------------------------------------

def test_errors_name_the_argument(rng):
    y = to_dev(randn(rng, (2, 4), np.float32))
    with pytest.raises(TypeError, match="bias_act_: 'y' must be a cupy.ndarray"):
        K.bias_act_([[1.0]], None, "relu")
    with pytest.raises(TypeError, match="'bias' has dtype float64, expected float32"):
        K.bias_act_(y, to_dev(np.zeros(4)), "relu")
    with pytest.raises(ValueError, match=r"'bias' has shape \(3,\), expected \(M,\) = \(4,\)"):
        K.bias_act_(y, to_dev(np.zeros(3, np.float32)), "relu")
    with pytest.raises(ValueError, match="'activation' must be one of"):
        K.bias_act_(y, None, "swish")
    with pytest.raises(ValueError, match="'y' must be C-contiguous"):
        K.bias_act_(to_dev(randn(rng, (4, 2), np.float32)).T, None, "relu")
    with pytest.raises(TypeError, match="'y' must be float16, float32 or float64, got int64"):
        K.bias_act_(to_dev(np.zeros((2, 2), np.int64)), None, "relu")
    with pytest.raises(ValueError, match="'out' overlaps 'y'"):
        yy = to_dev(randn(rng, (2, 4), np.float32))
        K.bias_glu(yy, None, "silu", out=yy.reshape(-1)[:4].reshape(2, 2))
    with pytest.raises(ValueError, match="'y' last dim must be even"):
        K.bias_glu(to_dev(randn(rng, (2, 3), np.float32)), None, "silu")
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 5\), expected \(M, K\) with K = 4"):
        K.linear_act(y, to_dev(randn(rng, (3, 5), np.float32)), None, "none")
    with pytest.raises(ValueError, match=r"'key_mask' has shape \(2, 4\), expected \(B, Sk\)"):
        q = to_dev(randn(rng, (2, 1, 3, 4), np.float32))
        K.attention(q, q, q, to_dev(np.ones((2, 4))), 1.0)
    with pytest.raises(ValueError, match="'num_heads' must be a positive int dividing"):
        K.transformer_layer(to_dev(randn(rng, (1, 2, 6), np.float32)), *([None] * 12), None, 4, 1e-5)
    with pytest.raises(ValueError, match="longer than the CUDA kernel's limit"):
        K.residual_layer_norm(to_dev(np.zeros((1, 9000), np.float32)), None,
                              to_dev(np.ones(9000, np.float32)), to_dev(np.zeros(9000, np.float32)), 1e-5)


def test_numpy_is_patched_for_numba_cuda():
    # numba-cuda 0.30 names np.row_stack, which NumPy 2.5 removed (runtime.py)
    assert np.row_stack is not None
