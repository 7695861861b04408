"""cuBLASLt GEMMs (minifuse/kernels/cuda/cublaslt.py) on a real GPU: against the float64 NumPy
reference (float32, float16, bfloat16; the half dtypes' activation epilogues too), the fallback
conditions, and capture into a CUDA graph."""
import numpy as np
import pytest
from cudatest import needs_gpu

import minifuse as mf
from kernels import reference as R

pytestmark = needs_gpu

# float16 stores 11 mantissa bits, bfloat16 8: its tolerance is float16's times 8
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 3e-3}
DTYPES = [np.dtype(np.float32), np.dtype(np.float16)]
if mf.bfloat16 is not None:
    TOL[mf.bfloat16] = 8 * TOL[np.dtype(np.float16)]
    DTYPES.append(mf.bfloat16)
HALF = DTYPES[1:]


def _dev(rng, shape, dtype, scale=1.0):
    import cupy
    return cupy.asarray((rng.standard_normal(shape) * scale).astype(dtype))


def _close(got, want, dtype):
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got.get().astype(np.float64), want, rtol=tol, atol=tol * max(1, np.abs(want).max()))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n, k, m", [(1, 1, 1), (7, 13, 5), (64, 96, 160), (257, 130, 33)])
def test_linear_matches_reference(bias, dtype, n, k, m):
    import cupy
    from minifuse.kernels.cuda import cublaslt
    rng = np.random.default_rng(n * 1000 + k + m)
    x, w = _dev(rng, (n, k), dtype), _dev(rng, (m, k), dtype, k ** -0.5)
    b = _dev(rng, (m,), dtype) if bias else None
    out = cupy.empty((n, m), dtype)
    assert cublaslt.linear(x, w, b, out)
    want = x.get().astype(np.float64) @ w.get().astype(np.float64).T + (0 if b is None else b.get())
    _close(out, want, dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_epilogue_activations_match_reference(bias, activation, dtype):
    """float16 and bfloat16 'relu' and 'gelu_tanh' run in the GEMM's epilogue (with and without
    the bias): the activation of the float64 product, within the dtype's precision; linear_act
    takes that path."""
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import cublaslt
    assert cublaslt.takes_activation(dtype, activation)
    rng = np.random.default_rng(5)
    x, w = _dev(rng, (67, 96), dtype), _dev(rng, (40, 96), dtype, 96 ** -0.5)
    b = _dev(rng, (40,), dtype) if bias else None
    out = cupy.empty((67, 40), dtype)
    assert cublaslt.linear(x, w, b, out, activation=activation)
    want = R.linear_act(x.get(), w.get(), None if b is None else b.get(), activation)
    _close(out, want, dtype)
    _close(K.linear_act(x, w, b, activation), want, dtype)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch, n, k, m", [(1, 1, 1, 1), (6, 9, 4, 9), (24, 33, 16, 7), (1, 40, 67, 24)])
def test_bmm_matches_reference(trans_a, trans_b, dtype, batch, n, k, m):
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import cublaslt
    rng = np.random.default_rng(batch + n + k + m)
    a = _dev(rng, (batch, k, n) if trans_a else (batch, n, k), dtype)
    b = _dev(rng, (batch, m, k) if trans_b else (batch, k, m), dtype, k ** -0.5)
    out = cupy.empty((batch, n, m), dtype)
    assert cublaslt.bmm(a, b, out, trans_a=trans_a, trans_b=trans_b)
    a64, b64 = a.get().astype(np.float64), b.get().astype(np.float64)
    want = (a64.transpose(0, 2, 1) if trans_a else a64) @ (b64.transpose(0, 2, 1) if trans_b else b64)
    _close(out, want, dtype)
    # the backend entry point: the same
    _close(K.bmm(a, b, cupy.empty_like(out), trans_a=trans_a, trans_b=trans_b), want, dtype)


def test_falls_back_where_cublaslt_does_not_apply():
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import cublaslt
    rng = np.random.default_rng(0)
    w, b = _dev(rng, (24, 40), np.float32), _dev(rng, (24,), np.float32)
    xs = _dev(rng, (34, 40), np.float32)[1:]            # a view that does not start 256-byte aligned
    assert not cublaslt.linear(xs, w, b, cupy.empty((33, 24), np.float32))
    assert not cublaslt.linear(xs.astype(np.float64), w.astype(np.float64), None, cupy.empty((33, 24)))
    assert not cublaslt.linear(xs[:0].copy(), w, b, cupy.empty((0, 24), np.float32))
    want = xs.get().astype(np.float64) @ w.get().astype(np.float64).T + b.get()
    for act in ("none", "relu", "gelu_tanh", "gelu"):   # the fallback and the cuBLASLt path agree
        ref = K.bias_act_(cupy.asarray(want.astype(np.float32)), None, act).get()
        np.testing.assert_allclose(K.linear_act(xs, w, b, act).get(), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(K.linear_act(xs.copy(), w, b, act).get(), ref, rtol=1e-5, atol=1e-5)


def test_nan_propagates():
    import cupy
    from minifuse.kernels.cuda import cublaslt
    rng = np.random.default_rng(1)
    x, w, b = _dev(rng, (4, 8), np.float32), _dev(rng, (6, 8), np.float32), _dev(rng, (6,), np.float32)
    x[1, 2] = np.nan
    out = cupy.empty((4, 6), np.float32)
    assert cublaslt.linear(x, w, b, out)
    assert np.isnan(out.get()[1]).all() and not np.isnan(out.get()[[0, 2, 3]]).any()


@pytest.mark.parametrize("dtype", [np.dtype(np.float32)] + HALF, ids=str)
def test_transformer_layer_is_captured_in_one_cuda_graph(dtype):
    """Every GEMM of the layer goes through cuBLASLt, so the whole layer replays from one graph."""
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.weights import LayerWeights
    rng = np.random.default_rng(2)
    b, s, d, h, f = 2, 8, 16, 2, 32
    x = _dev(rng, (b, s, d), dtype)
    p = lambda *shape: _dev(rng, shape, dtype, 0.2)   # noqa: E731
    weights = LayerWeights(p(3 * d, d), p(3 * d), p(d, d), p(d), 1 + p(d), p(d), p(f, d), p(f), p(d, f), p(d),
                           1 + p(d), p(d))
    mask = cupy.asarray(np.array([[1] * s, [1] * (s - 3) + [0] * 3]))
    layer = lambda x: K.transformer_layer(x, weights, mask, h, 1e-12, "gelu")   # noqa: E731
    graph = K.CudaGraph(layer, x)
    f64 = lambda a: a.get().astype(np.float64)   # noqa: E731
    np.testing.assert_allclose(f64(graph.replay()), f64(layer(x)), rtol=1e-6, atol=1e-6)
    x[...] = _dev(rng, (b, s, d), dtype)
    np.testing.assert_allclose(f64(graph.replay()), f64(layer(x)), rtol=1e-6, atol=1e-6)
