"""Every op in op_cases.CASES: forward against NumPy in float32 and float64, gradcheck in float64,
on the device named by MINIFUSE_TEST_DEVICE (tests/testdevice.py)."""
import numpy as np
import pytest

import minifuse as mf
from minifuse.autograd import gradcheck

from op_cases import CASES
from testdevice import DEVICE

PARAMS = [pytest.param(case, shapes, id=f"{case.name}-{'x'.join(map(str, shapes))}")
          for case in CASES for shapes in case.shapes]


def make_inputs(case, shapes, seed=0):
    rng = np.random.default_rng(seed)
    arrays = []
    for s in shapes:
        a = rng.standard_normal(s)
        if case.domain == "positive":
            a = np.abs(a) + 0.5
        arrays.append(np.asarray(a, dtype=np.float64))
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,shapes", PARAMS)
def test_forward_matches_numpy(case, shapes, dtype):
    arrays = make_inputs(case, shapes)
    inputs = [mf.tensor(a.astype(dtype), device=DEVICE) for a in arrays]
    out = case.fn(*inputs)
    expected = case.ref(*[a.astype(dtype).astype(np.float64) for a in arrays])
    assert out.dtype == dtype, f"{case.name} changed dtype to {out.dtype}"
    assert out.shape == np.shape(expected)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(out), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case,shapes", PARAMS)
def test_gradcheck(case, shapes):
    inputs = [mf.tensor(a, requires_grad=True, device=DEVICE) for a in make_inputs(case, shapes, seed=1)]
    assert gradcheck(case.fn, tuple(inputs))


@pytest.mark.parametrize("case,shapes", PARAMS[:12])
def test_gradients_flow_to_every_input(case, shapes):
    inputs = [mf.tensor(a, requires_grad=True, device=DEVICE) for a in make_inputs(case, shapes, seed=2)]
    case.fn(*inputs).sum().backward()
    for t in inputs:
        assert t.grad is not None and t.grad.shape == t.shape and t.grad.dtype == t.dtype


HALF = [pytest.param(mf.float16, id="float16"),
        pytest.param(mf.bfloat16, id="bfloat16", marks=pytest.mark.skipif(
            mf.bfloat16 is None or DEVICE != "cpu", reason="bfloat16: needs ml_dtypes; tested on the CPU"))]
HALF_TOL = {"float16": 2e-2, "bfloat16": 1e-1}     # of the result's scale: 11 and 8 mantissa bits


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case,shapes", PARAMS)
def test_half_inputs_keep_their_dtype(case, shapes, dtype):
    """No op changes a half dtype (NumPy would widen some results, e.g. SciPy's erf to float64):
    the output and every gradient stay in the input's dtype, near the float64 reference."""
    arrays = [a.astype(dtype) for a in make_inputs(case, shapes, seed=3)]
    inputs = [mf.tensor(a, requires_grad=True, device=DEVICE) for a in arrays]
    out = case.fn(*inputs)
    assert out.dtype == dtype, f"{case.name} changed {np.dtype(dtype).name} to {out.dtype}"
    expected = case.ref(*[a.astype(np.float64) for a in arrays])
    tol = HALF_TOL[np.dtype(dtype).name]
    got = np.asarray(out.detach()).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max(initial=0))))
    out.sum().backward()
    for t in inputs:
        assert t.grad is not None and t.grad.dtype == dtype, f"{case.name}: gradient in {getattr(t.grad, 'dtype', None)}"
