"""Every row of the activation table (minifuse/kernels/activations.py) on every backend: the
forward (apply_bias_act in place and into a buffer, bias_act_) and the backward (bias_act_backward,
with and without bias and bias gradient) against the table's own forward / slope evaluated in
float64 and against the independent references; and each backend's scalar functions cover the
table."""
import numpy as np
import pytest

import minifuse as mf
from backends import CUDA
from minifuse.kernels import activations as A
from minifuse.kernels.cpu import mathfn as cpu_mathfn
from tests.kernels import reference as ref

# moderate values (|x| <= 8) and zeros: where float64 formulas and the kernels' must agree
X = np.concatenate([np.linspace(-8, 8, 33), [0.0, -0.0, 1e-3, -1e-3, 0.5, -0.5, 3.0]])


def _table(name, kind, v):
    return getattr(A.BY_NAME[name], kind)(np, np.asarray(v, np.float64))


def test_table_agrees_with_the_references():
    """The table's formulas in float64 against the references written from the formulas alone."""
    assert A.NAMES == tuple(ref.ACTS) == tuple(ref.SLOPES)
    for name in A.NAMES:
        np.testing.assert_allclose(_table(name, "forward", X), ref.ACTS[name](X), rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(_table(name, "slope", X), ref.SLOPES[name](X), rtol=1e-12, atol=1e-14, err_msg=name)
        h = 1e-6                                  # and the slope is the derivative of the forward
        fd = (_table(name, "forward", X + h) - _table(name, "forward", X - h)) / (2 * h)
        ok = np.abs(X) > 1e-5 if name == "relu" else np.ones(X.shape, bool)
        np.testing.assert_allclose(_table(name, "slope", X)[ok], fd[ok], rtol=1e-6, atol=1e-8, err_msg=name)


def _inputs(rng, dtype):
    y = np.stack([X, X[::-1] * 0.7, rng.standard_normal(X.size) * 3]).astype(dtype)
    bias = (rng.standard_normal(X.size) * 0.5).astype(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    return y, bias, g


def _close(backend, got, table, reference, dtype):
    got = backend.to_host(got)
    ref.assert_close(got, table, backend.rtol(dtype))
    ref.assert_close(got, reference, backend.rtol(dtype))


@pytest.mark.parametrize("act", A.NAMES)
def test_forward_of_every_row(backend, dtype, rng, act):
    K, dev = backend.K, backend.to_dev
    y, bias, _ = _inputs(rng, dtype)
    v = y.astype(np.float64) + bias
    table, reference = _table(act, "forward", v), ref.bias_act(y, bias, act)
    yd = dev(y.copy())                          # on the CPU and the simulator dev() is the array itself
    out = backend.xp.empty(y.shape, dtype)
    assert K.apply_bias_act(yd, dev(bias), act, out) is out                     # into a buffer
    _close(backend, out, table, reference, dtype)
    np.testing.assert_array_equal(backend.to_host(yd), y)                      # y untouched
    assert K.apply_bias_act(yd, dev(bias), act) is yd                          # in place
    _close(backend, yd, table, reference, dtype)
    yd = dev(y.copy())
    assert K.bias_act_(yd, None, act) is yd                                    # checked, no bias
    _close(backend, yd, _table(act, "forward", y.astype(np.float64)), ref.bias_act(y, None, act), dtype)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("act", A.NAMES)
def test_backward_of_every_row(backend, dtype, rng, act, with_bias):
    if dtype == np.float16:
        pytest.skip("the fused training functions take float32 and float64")
    K, dev = backend.K, backend.to_dev
    y, bias, g = _inputs(rng, dtype)
    bias = bias if with_bias else None
    v = y.astype(np.float64) + (0 if bias is None else bias)
    table = g.astype(np.float64) * _table(act, "slope", v)
    want_dy, want_db = ref.bias_act_backward(g, y, bias, act)
    dy, db = backend.xp.empty(y.shape, dtype), backend.xp.empty(y.shape[1], dtype)
    K.bias_act_backward(dev(g), dev(y), dev(bias), act, dy, db)
    _close(backend, dy, table, want_dy, dtype)
    _close(backend, db, table.sum(0), want_db, dtype)
    dy2 = backend.xp.empty(y.shape, dtype)
    K.bias_act_backward(dev(g), dev(y), dev(bias), act, dy2)                  # no bias gradient wanted
    np.testing.assert_array_equal(backend.to_host(dy2), backend.to_host(dy))


def test_cpu_mathfn_has_every_row():
    for name in A.NAMES:
        assert callable(getattr(cpu_mathfn, name, None)), name
        assert callable(getattr(cpu_mathfn, name + "_slope", None)), name
    assert set(A.CODES) == set(A.NAMES) and sorted(A.CODES.values()) == list(range(len(A.NAMES)))


@pytest.mark.skipif(not CUDA.available, reason=CUDA.reason)
def test_cuda_mathfn_has_every_row():
    from minifuse.kernels.cuda import mathfn
    for ct in (np.float32, np.float64):
        assert set(mathfn.activations(ct)) == set(A.NAMES)
        assert set(mathfn.derivatives(ct)) == set(A.NAMES)
    assert mathfn.compute_dtype(np.float16) == np.float32
    if mf.bfloat16 is not None:
        assert mathfn.compute_dtype(mf.bfloat16) == np.float32


def test_gates_are_table_rows():
    assert set(A.GATES) <= set(A.NAMES)
    assert set(A.GATE_OF.values()) == set(A.GATES)
    assert set(A.LINEAR_ACTIVATIONS) == set(A.NAMES) | set(A.GATE_OF)
