"""The kernels of fused training (what minifuse.fusions calls) on every backend against the float64
references: the forward halves (apply_bias_act into a buffer, apply_bias_glu with per-row weights,
apply_residual_layer_norm keeping xhat and rstd, softmax_forward keeping each row's max and sum)
and the backward ones (bias_act_backward, glu_backward, residual_layer_norm_backward,
softmax_backward), with and without the optional bias / weight / parameter gradients, on empty,
size-1 and odd shapes, strided inputs where the kernels take them, and NaN.

float16 is not drawn here even on a GPU; bfloat16 is (CUDA), with the row statistics in float32
as the fused functions keep them (`Backend.stats_dtype`).
"""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import choice, given_backend
from minifuse.kernels.activations import GATES, NAMES
from tests.kernels import reference as ref

SEED = st.integers(0, 2**32 - 1)
ROWS = choice([0, 1, 3, 17], [0, 1, 3])      # the simulator: a block per row in the row-reduction kernels
DIM = choice([1, 2, 3, 7, 16, 33], [1, 2, 3, 7, 16])


def dtypes(backend):
    return st.sampled_from([d.type for d in backend.dtypes if d != np.float16])


def check(backend, actual, expected, dtype):
    ref.assert_close(backend.to_host(actual), expected, backend.rtol(dtype))


def _skip_float16(dtype):
    if dtype == np.float16:
        pytest.skip("the fused training functions take float32 and float64")


# ---- bias + activation ------------------------------------------------------------------------

@given_backend(dtype=dtypes, n=ROWS, m=DIM, act=st.sampled_from(NAMES), with_bias=st.booleans(),
               want_dbias=st.booleans(), seed=SEED)
def test_bias_act_forward_and_backward(backend, dtype, n, m, act, with_bias, want_dbias, seed):
    rng = np.random.default_rng(seed)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    y = ref.randn(rng, (n, m), dtype, scale=3)
    bias = ref.randn(rng, (m,), dtype) if with_bias else None
    g = ref.randn(rng, (n, m), dtype)
    out = xp.empty((n, m), dtype)
    yd = dev(y)
    assert K.apply_bias_act(yd, dev(bias), act, out) is out
    check(backend, out, ref.bias_act(y, bias, act), dtype)
    np.testing.assert_array_equal(backend.to_host(yd), y)
    dy = xp.empty((n, m), dtype)
    db = xp.full(m, np.nan, dtype) if want_dbias else None
    K.bias_act_backward(dev(g), yd, dev(bias), act, dy, db)
    want_dy, want_db = ref.bias_act_backward(g, y, bias, act)
    check(backend, dy, want_dy, dtype)
    if want_dbias:
        check(backend, db, want_db, dtype)          # zeros for an empty batch


def test_bias_act_backward_nan(backend, dtype):
    _skip_float16(dtype)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    y = np.linspace(-2, 2, 12).reshape(3, 4).astype(dtype)
    y[1, 2] = np.nan
    g = np.ones((3, 4), dtype)
    dy, db = xp.empty((3, 4), dtype), xp.empty(4, dtype)
    K.bias_act_backward(dev(g), dev(y), None, "gelu_tanh", dy, db)
    want_dy, want_db = ref.bias_act_backward(g, y, None, "gelu_tanh")
    assert np.isnan(backend.to_host(dy)).sum() == 1 and np.isnan(backend.to_host(db)).sum() == 1
    check(backend, dy, want_dy, dtype)
    check(backend, db, want_db, dtype)


# ---- gated linear units ---------------------------------------------------------------------------

@given_backend(dtype=dtypes, n=ROWS, h=DIM, gate=st.sampled_from(GATES), with_bias=st.booleans(),
               weighted=st.booleans(), want_dbias=st.booleans(), seed=SEED)
def test_glu_forward_and_backward(backend, dtype, n, h, gate, with_bias, weighted, want_dbias, seed):
    rng = np.random.default_rng(seed)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    y = ref.randn(rng, (n, 2 * h), dtype, scale=2)
    bias = ref.randn(rng, (2 * h,), dtype) if with_bias else None
    w = ref.randn(rng, (n,), dtype) if weighted else None
    g = ref.randn(rng, (n, h), dtype)
    out = xp.empty((n, h), dtype)
    assert K.apply_bias_glu(dev(y), dev(bias), gate, out, dev(w)) is out
    expected = ref.bias_glu(y, bias, gate) * (1.0 if w is None else w.astype(np.float64)[:, None])
    check(backend, out, expected, dtype)
    dy = xp.empty((n, 2 * h), dtype)
    db = xp.full(2 * h, np.nan, dtype) if want_dbias else None
    dw = xp.full(n, np.nan, dtype) if weighted else None
    K.glu_backward(dev(g), dev(y), dev(bias), gate, dev(w), dy, db, dw)
    want_dy, want_db, want_dw = ref.glu_backward(g, y, bias, gate, w)
    check(backend, dy, want_dy, dtype)
    if want_dbias:
        check(backend, db, want_db, dtype)
    if weighted:
        check(backend, dw, want_dw, dtype)


@pytest.mark.parametrize("gate", GATES)
def test_glu_backward_rows_wider_than_a_block(backend, rng, gate):
    """The per-row weight gradient sums a row across the column blocks (CUDA: 256 threads)."""
    n, h = backend.pick((5, 600), (2, 300))
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    y, g = ref.randn(rng, (n, 2 * h), np.float64), ref.randn(rng, (n, h), np.float64)
    w, bias = ref.randn(rng, (n,), np.float64), ref.randn(rng, (2 * h,), np.float64)
    dy, db, dw = xp.empty((n, 2 * h)), xp.empty(2 * h), xp.empty(n)
    K.glu_backward(dev(g), dev(y), dev(bias), gate, dev(w), dy, db, dw)
    for got, want in zip((dy, db, dw), ref.glu_backward(g, y, bias, gate, w)):
        check(backend, got, want, np.float64)


# ---- residual + LayerNorm -------------------------------------------------------------------------

@given_backend(dtype=dtypes, n=ROWS, d=DIM, with_residual=st.booleans(), with_bias=st.booleans(),
               want_params=st.booleans(), offset=st.sampled_from([0.0, 1e3]), seed=SEED)
def test_layer_norm_forward_and_backward(backend, dtype, n, d, with_residual, with_bias, want_params, offset, seed):
    rng = np.random.default_rng(seed)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    x = ref.randn(rng, (n, d), dtype) + dtype(offset)
    r = ref.randn(rng, (n, d), dtype) if with_residual else None
    bias = ref.randn(rng, (d,), dtype) if with_bias else None        # the folded projection bias
    gamma, beta = ref.randn(rng, (d,), dtype), ref.randn(rng, (d,), dtype)
    out, xhat, rstd = xp.empty((n, d), dtype), xp.empty((n, d), dtype), xp.empty(n, backend.stats_dtype(dtype))
    assert K.apply_residual_layer_norm(dev(x), dev(r), dev(bias), dev(gamma), dev(beta), 1e-5, out, xhat,
                                       rstd) is out
    ct = backend.compute_dtype(dtype)               # where x + residual + bias is rounded
    v = x.astype(ct) if r is None else x.astype(ct) + r.astype(ct)
    v = v if bias is None else v + bias.astype(ct)
    tol = backend.layer_norm_rtol(dtype, v)
    ref.assert_close(backend.to_host(out), ref.layer_norm(v, None, gamma, beta, 1e-5), tol)
    want_xhat, want_rstd = ref.layer_norm_stats(v, None, 1e-5)
    ref.assert_close(backend.to_host(xhat), want_xhat, tol)
    ref.assert_close(backend.to_host(rstd) / want_rstd, np.ones(n), backend.rtol(dtype))   # rstd may be large
    out2 = xp.empty((n, d), dtype)                                     # inference: no xhat, rstd
    K.apply_residual_layer_norm(dev(x), dev(r), dev(bias), dev(gamma), dev(beta), 1e-5, out2)
    check(backend, out2, backend.to_host(out), dtype)

    g = ref.randn(rng, (n, d), dtype)
    dx = xp.empty((n, d), dtype)
    dgamma, dbeta = (xp.full(d, np.nan, dtype), xp.full(d, np.nan, dtype)) if want_params else (None, None)
    K.residual_layer_norm_backward(dev(g), xhat, rstd, dev(gamma), dx, dgamma, dbeta)
    want_dx, want_dgamma, want_dbeta = ref.layer_norm_backward(g, backend.to_host(xhat), backend.to_host(rstd), gamma)
    check(backend, dx, want_dx, dtype)
    if want_params:
        check(backend, dgamma, want_dgamma, dtype)
        check(backend, dbeta, want_dbeta, dtype)


def test_layer_norm_backward_nan_row(backend, dtype, rng):
    _skip_float16(dtype)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    xhat, rstd = ref.layer_norm_stats(ref.randn(rng, (3, 6), dtype), None, 1e-5)
    xhat, rstd = xhat.astype(dtype), rstd.astype(backend.stats_dtype(dtype))
    g = ref.randn(rng, (3, 6), dtype)
    g[1, 4] = np.nan
    gamma = ref.randn(rng, (6,), dtype)
    dx, dgamma, dbeta = xp.empty((3, 6), dtype), xp.empty(6, dtype), xp.empty(6, dtype)
    K.residual_layer_norm_backward(dev(g), dev(xhat), dev(rstd), dev(gamma), dx, dgamma, dbeta)
    host = backend.to_host(dx)
    assert np.isnan(host[1]).all() and np.isfinite(host[[0, 2]]).all()
    for got, want in zip((dx, dgamma, dbeta), ref.layer_norm_backward(g, xhat, rstd, gamma)):
        check(backend, got, want, dtype)


# ---- softmax of attention -----------------------------------------------------------------------

def _mask(rng, nb, sk, kind):
    if kind == "none":
        return None
    m = rng.random((nb, sk)) < 0.6
    if kind == "padded_row" and nb:
        m[0] = False                              # every key padded: uniform, finite
    return m.astype({"bool": bool, "int": np.int64}.get(kind, np.float32))


@given_backend(dtype=dtypes, nb=choice([0, 1, 2]), nh=choice([1, 3], [1, 2]), sq=choice([1, 4], [1, 2]),
               sk=choice([1, 5, 9]), dh=choice([1, 4]), mask=st.sampled_from(["none", "bool", "int", "padded_row"]),
               strided=st.booleans(), seed=SEED)
def test_softmax_forward_and_backward(backend, dtype, nb, nh, sq, sk, dh, mask, strided, seed):
    rng = np.random.default_rng(seed)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    key_mask = _mask(rng, nb, sk, mask)
    like = dev(np.zeros((1, 1), dtype))
    madd = K.mask_add("softmax", dev(key_mask), nb, sk, ("s", like))
    want_madd = ref.additive_mask(key_mask, nb, sk, dtype)
    scale = 0.7
    s = ref.randn(rng, (nb, nh, sq, sk), dtype, scale=2)
    p = dev(s.copy())
    stats = backend.stats_dtype(dtype)
    rowmax, rowsum = xp.empty((nb, nh, sq), stats), xp.empty((nb, nh, sq), stats)
    K.softmax_forward(p, madd, key_mask is not None, scale, rowmax, rowsum)
    want_p, want_max, want_sum = ref.softmax_stats(s, want_madd, scale)
    check(backend, p, want_p, dtype)
    check(backend, rowsum, want_sum, dtype)
    np.testing.assert_allclose(backend.to_host(rowmax), want_max, rtol=backend.rtol(dtype))
    assert np.isfinite(backend.to_host(p)).all()

    dp = ref.randn(rng, (nb, nh, sq, sk), dtype)
    do = ref.randn(rng, (nb, nh, sq, dh), dtype, contiguous=not strided)   # any strides
    o = ref.randn(rng, (nb, nh, sq, dh), dtype, contiguous=not strided)
    s2, dp2 = dev(s.copy()), dev(dp.copy())
    K.softmax_backward(s2, dp2, madd, key_mask is not None, scale, rowmax, rowsum, dev(do), dev(o))
    want_p, want_ds = ref.softmax_backward(s, dp, want_madd, scale, do, o)
    check(backend, s2, want_p, dtype)                  # P recomputed in place of the scores
    check(backend, dp2, want_ds, dtype)


def test_softmax_nan_row(backend, dtype, rng):
    _skip_float16(dtype)
    K, dev, xp = backend.K, backend.to_dev, backend.xp
    s = ref.randn(rng, (1, 2, 2, 5), dtype)
    s[0, 1, 0, 3] = np.nan
    madd = K.mask_add("softmax", None, 1, 5, ("s", dev(s)))
    stats = backend.stats_dtype(dtype)
    p, rowmax, rowsum = dev(s.copy()), xp.empty((1, 2, 2), stats), xp.empty((1, 2, 2), stats)
    K.softmax_forward(p, madd, False, 1.0, rowmax, rowsum)
    want, _, _ = ref.softmax_stats(s, np.zeros((1, 5)), 1.0)
    got = backend.to_host(p)
    assert np.isnan(got[0, 1, 0]).all() and np.isfinite(np.delete(got.reshape(4, 5), 2, axis=0)).all()
    check(backend, p, want, dtype)


@pytest.mark.parametrize("kind", ["bool", "int", "float"])
def test_mask_add(backend, dtype, kind):
    """1 / True keep, 0 pad -> 0 / finfo(dtype).min (in the kernels' compute dtype); other numbers
    are refused."""
    mask = np.array([[1, 0, 1], [0, 0, 1]]).astype({"bool": bool, "int": np.int32, "float": np.float64}[kind])
    like = backend.to_dev(np.zeros((1, 1), dtype))
    madd = backend.to_host(backend.K.mask_add("f", backend.to_dev(mask), 2, 3, ("s", like)))
    np.testing.assert_array_equal(madd, ref.additive_mask(mask, 2, 3, dtype))
    with pytest.raises(ValueError, match=r"f: 'key_mask' has shape \(2, 3\), expected \(B, Sk\) = \(2, 4\)"):
        backend.K.mask_add("f", backend.to_dev(mask), 2, 4, ("s", like))
    if kind != "bool":
        mask[1, 2] = 2
        with pytest.raises(ValueError, match=r"f: 'key_mask' must hold only 0 \(padding\) and 1 \(keep\)"):
            backend.K.mask_add("f", backend.to_dev(mask), 2, 3, ("s", like))
