"""The 3xTF32 split (minifuse/kernels/cuda/tf32x3.py) and float32 GEMM precision on CUDA
(`minifuse.set_float32_matmul_precision`): the split under the simulator and on a GPU, the GEMMs
on a GPU against the float64 NumPy reference."""
import math

import numpy as np
import pytest
from cudatest import needs_gpu, needs_kernels, to_dev, to_host

import minifuse as mf
from backends import CUDA
from minifuse.kernels.weights import LayerWeights

if CUDA.available:     # the package imports CuPy on a machine with no simulator
    from minifuse.kernels import cuda as K

TF32_LOW_BITS = 0x1FFF          # the 13 mantissa bits TF32 does not have


@pytest.fixture
def precision():
    """Sets the float32 GEMM precision for one test and restores the default after it."""
    def set_(p):
        mf.set_float32_matmul_precision(p)
    yield set_
    mf.set_float32_matmul_precision("highest")


def _split(x, lo_at, axis=-1):
    from minifuse.kernels.cuda import tf32x3
    xp = np if isinstance(to_dev(x), np.ndarray) else __import__("cupy")
    return to_host(tf32x3.split3(xp, to_dev(x), lo_at, axis))


def _is_tf32(a):
    return (a.view(np.int32) & TF32_LOW_BITS == 0).all()


@needs_kernels
@pytest.mark.parametrize("lo_at", [0, 1, 2])
@pytest.mark.parametrize("n, k", [(1, 1), (3, 5), (4, 33)])
def test_split3_layout_and_error_bound(rng, n, k, lo_at):
    x = (rng.standard_normal((n, k)) * 10.0 ** rng.integers(-30, 30, (n, k))).astype(np.float32)
    x.flat[0] = np.float32(3.4028235e38)        # rounding up would overflow: truncated instead
    x.flat[-1] = -x.flat[-1]
    out = _split(x, lo_at)
    assert out.shape == (n, 3 * k) and out.dtype == np.float32
    blocks = [out[:, j * k:(j + 1) * k] for j in range(3)]
    lo = blocks[lo_at]
    hi = [b for j, b in enumerate(blocks) if j != lo_at]
    np.testing.assert_array_equal(hi[0], hi[1])
    np.testing.assert_array_equal(hi[0], _tf32_reference(x))
    assert _is_tf32(hi[0]) and _is_tf32(lo) and np.isfinite(hi[0]).all()
    x64, hi64, lo64 = (a.astype(np.float64) for a in (x, hi[0], lo))
    assert (np.abs(x64 - hi64) <= 2.0 ** -10 * np.abs(x64)).all()            # hi: x to 11 bits
    assert (np.abs(x64 - hi64 - lo64) <= 2.0 ** -22 * np.abs(x64)).all()     # hi + lo: x to 22 bits


@needs_kernels
def test_split3_rounds_to_nearest_and_keeps_non_finite():
    one_ulp = np.float32(1 + 2.0 ** -23)            # just above 1: hi = 1, lo = 2^-23
    half_up = np.float32(1 + 2.0 ** -11)            # halfway between TF32 neighbours: away from zero
    x = np.array([[one_ulp, half_up, -half_up, np.nan, np.inf, -np.inf, 0.0, -0.0]], np.float32)
    out = _split(x, 0)
    lo, hi = out[0, :8], out[0, 16:]
    np.testing.assert_array_equal(hi[:3], [1.0, 1 + 2.0 ** -10, -(1 + 2.0 ** -10)])
    np.testing.assert_array_equal(lo[:3], [2.0 ** -23, -(2.0 ** -11), 2.0 ** -11])
    assert np.isnan(hi[3]) and hi[4] == np.inf and hi[5] == -np.inf
    np.testing.assert_array_equal(lo[3:6], 0.0)
    np.testing.assert_array_equal(np.signbit(hi[6:]), [False, True])


@needs_kernels
@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
def test_split3_empty(shape):
    assert _split(np.zeros(shape, np.float32), 2).shape == (shape[0], 3 * shape[1])


@needs_kernels
@pytest.mark.parametrize("shape, axis", [((2, 5, 3), 1), ((2, 5, 3), 0), ((4, 3), 0), ((2, 3, 4), -1)])
def test_split3_along_any_axis(rng, shape, axis):
    """A transposed GEMM operand is split along the axis its inner dimension is stored on: each of
    that axis' three blocks is the split of x along it, the same numbers as the last-axis split."""
    x = rng.standard_normal(shape).astype(np.float32)
    out = _split(x, 1, axis)
    k = shape[axis]
    assert out.shape == shape[:axis % x.ndim] + (3 * k,) + shape[axis % x.ndim + 1:]
    blocks = [np.take(out, range(j * k, (j + 1) * k), axis=axis) for j in range(3)]
    hi = _tf32_reference(x)
    np.testing.assert_array_equal(blocks[0], hi)
    np.testing.assert_array_equal(blocks[2], hi)
    np.testing.assert_array_equal(blocks[1], _tf32_reference(x - hi))


def test_precision_setting_is_checked_and_kept():
    assert mf.get_float32_matmul_precision() == "highest"
    with pytest.raises(ValueError, match=r"set_float32_matmul_precision: 'precision' must be one of "
                                         r"'highest', 'high', 'medium', got 'low'"):
        mf.set_float32_matmul_precision("low")
    try:
        mf.set_float32_matmul_precision("high")
        assert mf.get_float32_matmul_precision() == "high"
    finally:
        mf.set_float32_matmul_precision("highest")


def _tf32_reference(x):
    """NumPy's tf32(x): round the float32 bits to 10 mantissa bits, ties away from zero."""
    bits = x.view(np.int32).astype(np.int64)
    r = ((bits + 0x1000) & -0x2000).astype(np.int32).view(np.float32)
    return np.where(np.isinf(r), (bits & -0x2000).astype(np.int32).view(np.float32), r)


@needs_gpu
def test_split3_many_rows_against_numpy(rng):
    """More rows than the grid has row blocks: the kernel's four-rows-per-step loop and its tail."""
    x = rng.standard_normal((4 * 1024 + 7, 5)).astype(np.float32)
    out = _split(x, 0)
    hi = _tf32_reference(x)
    np.testing.assert_array_equal(out[:, 5:10], hi)
    np.testing.assert_array_equal(out[:, 10:], hi)
    np.testing.assert_array_equal(out[:, :5], _tf32_reference(x - hi))


def _linear_case(rng, n, k, m):
    import cupy
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = (rng.standard_normal((m, k)) / math.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = np.tanh(x.astype(np.float64) @ w.astype(np.float64).T + b)
    return [cupy.asarray(a) for a in (x, w, b)], want


def _rel_err(got, want):
    return float(np.linalg.norm(to_host(got) - want) / np.linalg.norm(want))


@needs_gpu
@pytest.mark.parametrize("n, k, m", [(1, 1, 1), (7, 13, 5), (257, 130, 33), (512, 768, 3072)])
def test_linear_act_precisions_against_float64(rng, precision, n, k, m):
    """'high' (3xTF32) is as accurate as float32 ('highest'), to within a few times; 'medium'
    (one TF32 product) is not: that difference shows that each mode ran what it says."""
    (x, w, b), want = _linear_case(rng, n, k, m)
    err = {}
    for p in ("highest", "high", "medium"):
        precision(p)
        err[p] = _rel_err(K.linear_act(x, w, b, "tanh"), want)
    assert err["highest"] < 1e-6 and err["high"] < 5e-6, err
    if k % 32 == 0:  # cuBLAS may time a float32-core kernel faster for small or unaligned K (K = 13, 130 seen)
        assert 1e-5 < err["medium"] < 3e-3 and err["medium"] > 30 * err["high"], err


@needs_gpu
@pytest.mark.parametrize("p, tol", [("high", 5e-6), ("medium", 3e-3)])
def test_tensor_core_precisions_take_empty_and_strided_inputs(rng, precision, p, tol):
    """An empty batch, a Fortran-order weight and a strided x at 'high' / 'medium': the split
    kernel reads any strides, and the result is the float64 reference's."""
    import cupy
    (x, w, b), want = _linear_case(rng, 9, 64, 40)
    precision(p)
    assert K.linear_act(x[:0], w, b, "tanh").shape == (0, 40)
    assert _rel_err(K.linear_act(x, cupy.asfortranarray(w), b, "tanh"), want) < tol
    wide = cupy.zeros((9, 128), np.float32)
    wide[:, ::2] = x
    assert _rel_err(K.linear_act(wide[:, ::2], w, b[::-1].copy()[::-1], "tanh"), want) < tol


@needs_gpu
def test_high_precision_propagates_nan_and_inf(rng, precision):
    (x, w, b), _ = _linear_case(rng, 6, 40, 24)
    x[1, 3], x[4, 0] = np.nan, np.inf
    precision("high")
    y = to_host(K.linear_act(x, w, b, "none"))
    assert np.isnan(y[1]).all() and not np.isfinite(y[4]).any()
    assert np.isfinite(np.delete(y, [1, 4], axis=0)).all()


@needs_gpu
def test_high_precision_transformer_layer_and_graph(rng, precision):
    """The whole layer at 'high' agrees with 'highest' to float32 accuracy, also replayed from a
    CUDA graph captured at 'high'; float16 ignores the setting."""
    import cupy
    d, h, f, B, S = 64, 4, 256, 3, 10
    r = lambda *s: cupy.asarray((rng.standard_normal(s) * 0.2).astype(np.float32))   # noqa: E731
    args = [r(B, S, d), r(3 * d, d), r(3 * d), r(d, d), r(d), 1 + r(d), r(d), r(f, d), r(f), r(d, f), r(d),
            1 + r(d), r(d)]
    mask = cupy.asarray(np.array([[1] * S, [1] * 7 + [0] * 3, [1] * S], np.int32))

    def layer(x, *weights):
        return K.transformer_layer(x, LayerWeights(*weights), mask, h, 1e-12, "gelu")
    exact = to_host(layer(*args))
    precision("high")
    high = to_host(layer(*args))
    np.testing.assert_allclose(high, exact, rtol=2e-5, atol=2e-5)
    graph = K.CudaGraph(layer, *args)
    np.testing.assert_array_equal(to_host(graph.replay()), high)
    half = [a.astype(np.float16) for a in args]
    precision("highest")
    want = to_host(layer(*half))
    precision("high")
    np.testing.assert_array_equal(to_host(layer(*half)), want)


@needs_gpu
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("nb", [1, 3])
def test_bmm_follows_the_precision(rng, precision, trans_a, trans_b, nb):
    """The backend's bmm (the fused training functions' GEMMs) at each precision, either operand
    stored transposed: 'high' is float32-accurate, 'medium' is not. A batch of several products
    (attention's) keeps the float32 cores at every precision."""
    import cupy
    n, k, m = 96, 256, 160
    a = rng.standard_normal((nb, n, k)).astype(np.float32)
    b = rng.standard_normal((nb, k, m)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    stored_a = np.ascontiguousarray(a.transpose(0, 2, 1)) if trans_a else a
    stored_b = np.ascontiguousarray(b.transpose(0, 2, 1)) if trans_b else b
    err = {}
    for p in ("highest", "high", "medium"):
        precision(p)
        out = cupy.empty((nb, n, m), np.float32)
        K.bmm(cupy.asarray(stored_a), cupy.asarray(stored_b), out, trans_a=trans_a, trans_b=trans_b)
        err[p] = _rel_err(out, want)
    if nb > 1:
        assert max(err.values()) < 1e-6, err
    else:
        assert err["highest"] < 1e-6 and err["high"] < 5e-6 and 1e-5 < err["medium"] < 3e-3, err


def _fused_grads(fn, arrays, g):
    """Output and input gradients of fused function fn on the GPU in float32, on host."""
    ts = [mf.tensor(a.astype(np.float32), device="cuda", requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(mf.tensor(g.astype(np.float32), device="cuda"))
    return [np.asarray(out.detach())] + [np.asarray(t.grad) for t in ts]


def _fused_reference(fn, arrays, g):
    ts = [mf.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(mf.tensor(g))
    return [out.detach().numpy()] + [t.grad.numpy() for t in ts]


@needs_gpu
@pytest.mark.parametrize("case", ["linear", "mlp", "attention"])
def test_fused_training_follows_the_precision(rng, precision, case):
    """The fused training functions, forward and every gradient, at 'high' within float32's
    accuracy of the float64 CPU reference, and measurably off it at 'medium'; attention's
    batched products stay float32 at both."""
    from minifuse import fusions as FU
    n, d, f = 256, 128, 384
    r = lambda *s: rng.standard_normal(s) / math.sqrt(s[-1])   # noqa: E731
    if case == "linear":
        fn = lambda x, w, b: FU.fused_linear_act(x, w, b, "gelu_tanh")   # noqa: E731
        arrays, out_shape = [r(n, d), r(f, d), r(f)], (n, f)
    elif case == "mlp":
        fn = lambda x, w1, b1, w2, b2: FU.fused_mlp(x, w1, b1, w2, b2, "swiglu")   # noqa: E731
        arrays, out_shape = [r(n, d), r(2 * f, d), r(2 * f), r(d, f), r(d)], (n, d)
    else:
        mask = np.ones((4, 64), np.int32)
        mask[1, 40:] = 0
        fn = lambda qkv: FU.fused_attention(qkv, mf.tensor(mask, device=qkv.device), 2)   # noqa: E731
        arrays, out_shape = [r(4, 64, 3 * d) * 4], (4, 64, d)
    g = rng.standard_normal(out_shape)
    want = _fused_reference(fn, arrays, g)
    errs = {}
    for p in ("high", "medium"):
        precision(p)
        got = _fused_grads(fn, arrays, g)
        errs[p] = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(got, want)]
    assert max(errs["high"]) < 1e-5, errs
    assert (max(errs["medium"]) < 1e-5) if case == "attention" else (max(errs["medium"]) > 1e-5), errs
