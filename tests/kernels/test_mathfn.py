"""The CPU's vectorizable exp / erf / tanh (minifuse.kernels.cpu.mathfn, what its kernels inline)
against math.* over a dense grid and special values; and on every backend, the activations built
on them at signed zeros and their exact limits. (CUDA's device functions are libdevice's expf,
erff, tanhf: tested through the kernels, tests/kernels/test_activations.py.)"""
import math

import numpy as np
import pytest
from numba import njit

from minifuse.kernels.cpu import mathfn

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 1e30, -1e30, 3.999, 4.0, 4.001, -4.0,
           0.125, -0.125, 0.12499, 88.7, 88.73, -103.9, -104.0, 709.7, 709.8, -745.2]


def _vectorized(fn):
    @njit(error_model="numpy", fastmath={"contract"})
    def apply(x, y):
        for i in range(x.size):
            y[i] = fn(x[i])
    return apply


KERNELS = {"exp": _vectorized(mathfn.exp_), "erf": _vectorized(mathfn.erf_), "tanh": _vectorized(mathfn.tanh_)}
REF = {"exp": math.exp, "erf": math.erf, "tanh": math.tanh}
GRID = {"exp": 120.0, "erf": 10.0, "tanh": 20.0}


def _ref(name, x, dtype):
    """math.* in float64; exp rounded to `dtype` so that float32 overflow happens at the same x."""
    def one(v):
        try:
            return REF[name](v)
        except OverflowError:
            return math.inf
    r = np.array([one(float(v)) for v in x])
    with np.errstate(over="ignore"):
        return r.astype(dtype).astype(np.float64) if name == "exp" else r


def _run(name, dtype):
    x = np.concatenate([np.linspace(-GRID[name], GRID[name], 200_001), SPECIAL,
                        np.geomspace(1e-8, 1.0, 2000), -np.geomspace(1e-8, 1.0, 2000)]).astype(dtype)
    y = np.empty_like(x)
    KERNELS[name](x, y)
    return x, y, _ref(name, x, dtype)


@pytest.mark.parametrize("name", ["erf", "tanh"])
def test_float32_abs_error_below_1e7(name):
    x, y, r = _run(name, np.float32)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    np.testing.assert_array_equal(y[np.isinf(x)], r[np.isinf(x)])
    err = np.abs(y.astype(np.float64) - r)[~np.isnan(x)]
    assert err.max() <= 1.0e-7, (name, err.max(), x[~np.isnan(x)][err.argmax()])


def test_signed_zero_and_exact_limits():
    for dtype in (np.float32, np.float64):
        for name in ("erf", "tanh"):
            x = np.array([-0.0, 0.0, 50.0, -50.0], dtype)
            y = np.empty_like(x)
            KERNELS[name](x, y)
            assert np.signbit(y[0]) and not np.signbit(y[1]), (name, dtype, y)
            assert y[2] == 1 and y[3] == -1, (name, dtype, y)   # gelu(-inf) is NaN only if erf(-inf) == -1


@pytest.mark.parametrize("dtype, rel", [(np.float32, 2.5e-7), (np.float64, 5e-16)])
def test_exp_relative_error(dtype, rel):
    x, y, r = _run("exp", dtype)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(r))
    normal = np.isfinite(r) & (r > np.finfo(dtype).tiny)     # denormal results lose bits by design
    err = np.abs(y[normal].astype(np.float64) - r[normal]) / r[normal]
    assert err.max() <= rel, (err.max(), x[normal][err.argmax()])
    tiny = np.isfinite(r) & ~normal
    assert np.all(np.abs(y[tiny]) <= 2 * np.finfo(dtype).tiny)


@pytest.mark.parametrize("name", ["erf", "tanh"])
def test_float64_uses_libm_exactly(name):
    x, y, r = _run(name, np.float64)
    np.testing.assert_array_equal(y, r)


@pytest.mark.parametrize("act", ["tanh", "gelu", "gelu_tanh", "sigmoid"])
def test_activations_signed_zero_and_exact_limits(backend, dtype, act):
    """tanh reaches +-1 exactly (gelu(-inf) is NaN only if erf(-inf) == -1), so the GELUs reach x and
    -0 exactly at +-50; the sigmoid 1/2 at zero, 1 and ~0 at +-50. (The sign of a zero input is
    not kept: without a bias the kernels add a zero one, and -0 + 0 = +0.)"""
    y = backend.to_dev(np.array([[-0.0, 0.0, 50.0, -50.0]], dtype))
    got = backend.to_host(backend.K.bias_act_(y, None, act))
    if act == "tanh":
        np.testing.assert_array_equal(got[0], [0, 0, 1, -1])
    elif act == "sigmoid":
        assert got[0, 0] == got[0, 1] == 0.5 and got[0, 2] == 1 and 0 <= float(got[0, 3]) < 1e-21, got
    else:
        np.testing.assert_array_equal(got[0], [0, 0, 50, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_never_makes_a_denormal(dtype):
    """Below the smallest x whose exp is a normal number, exp is exactly 0 (making a denormal is
    a microcode assist on Intel cores); from that x on, a normal number."""
    tiny = np.finfo(dtype).tiny
    edge = mathfn._EXP32[1] if dtype == np.float32 else mathfn._EXP64[1]
    # the edge itself, independently: the smallest x of the dtype whose exact exp is normal
    assert math.exp(float(edge)) >= tiny > math.exp(float(np.nextafter(dtype(edge), dtype(-np.inf))))
    x = np.array([-np.inf, -1e4, edge - 5, np.nextafter(dtype(edge), dtype(-np.inf)), edge,
                  np.nextafter(dtype(edge), dtype(np.inf)), edge + 1], dtype)
    y = np.empty_like(x)
    KERNELS["exp"](x, y)
    np.testing.assert_array_equal(y[:4], 0)
    assert np.all(y[4:] >= tiny), y
