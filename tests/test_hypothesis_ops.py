"""Random shapes for broadcasting and reductions, against NumPy, with gradients checked."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minifuse as mf
from minifuse.autograd import gradcheck

from testdevice import DEVICE

BINARY_OPS = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    "maximum": (mf.maximum, np.maximum),
}


@given(op=st.sampled_from(sorted(BINARY_OPS)),
       shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_broadcasting(op, shapes, seed):
    fn, ref = BINARY_OPS[op]
    rng = np.random.default_rng(seed)
    a_np, b_np = (rng.standard_normal(s) for s in shapes.input_shapes)
    a, b = mf.tensor(a_np, requires_grad=True, device=DEVICE), mf.tensor(b_np, requires_grad=True, device=DEVICE)
    out = fn(a, b)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(np.asarray(out.detach()), ref(a_np, b_np), rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, (a, b), fast_mode=True)
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


REDUCTIONS = {
    "sum": (lambda t, d, k: t.sum(d, keepdim=k), lambda x, d, k: x.sum(d, keepdims=k)),
    "mean": (lambda t, d, k: t.mean(d, keepdim=k), lambda x, d, k: x.mean(d, keepdims=k)),
    "var": (lambda t, d, k: t.var(d, keepdim=k), lambda x, d, k: x.var(d, ddof=1, keepdims=k)),
    "amax": (lambda t, d, k: t.amax(d, keepdim=k), lambda x, d, k: x.max(d, keepdims=k)),
    "amin": (lambda t, d, k: t.amin(d, keepdim=k), lambda x, d, k: x.min(d, keepdims=k)),
}


@st.composite
def shape_and_dims(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    dims = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1, max_size=len(shape)))
    negative = draw(st.booleans())
    dims = tuple(d - len(shape) if negative else d for d in dims)
    return shape, dims if len(dims) > 1 else dims[0]


@given(op=st.sampled_from(sorted(REDUCTIONS)), sd=shape_and_dims(), keepdim=st.booleans(),
       seed=st.integers(0, 2**16))
def test_reductions(op, sd, keepdim, seed):
    shape, dims = sd
    fn, ref = REDUCTIONS[op]
    axes = dims if isinstance(dims, tuple) else (dims,)
    if op == "var" and np.prod([shape[d] for d in axes]) < 2:
        return  # the unbiased variance of one element is NaN: tested in test_var_of_one_element
    x_np = np.random.default_rng(seed).standard_normal(shape)
    x = mf.tensor(x_np, requires_grad=True, device=DEVICE)
    out = fn(x, dims, keepdim)
    expected = ref(x_np, None if dims is None else (dims if isinstance(dims, tuple) else dims), keepdim)
    np.testing.assert_allclose(np.asarray(out.detach()), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: fn(t, dims, keepdim), x, fast_mode=True)


@given(shapes=st.sampled_from([((2, 3), (3, 4)), ((5,), (5, 2)), ((2, 1, 3, 4), (5, 4, 2)),
                               ((3, 4), (4,)), ((1, 2, 3), (2, 3, 1))]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]))
def test_matmul_shapes(shapes, seed, dtype):
    rng = np.random.default_rng(seed)
    a_np, b_np = (rng.standard_normal(s).astype(dtype) for s in shapes)
    out = mf.tensor(a_np, device=DEVICE) @ mf.tensor(b_np, device=DEVICE)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(out), a_np.astype(np.float64) @ b_np.astype(np.float64), rtol=tol, atol=tol)
    if dtype == np.float64:
        assert gradcheck(mf.matmul, (mf.tensor(a_np, requires_grad=True, device=DEVICE), mf.tensor(b_np, requires_grad=True, device=DEVICE)),
                         fast_mode=True)


def test_var_of_one_element_is_nan():
    x = mf.tensor([[1.5]], requires_grad=True, device=DEVICE)
    v = x.var(1)
    assert np.isnan(np.asarray(v.detach())).all()
    v.sum().backward()
    assert np.isnan(np.asarray(x.grad)).all()
