"""The engine, grad mode and Function: what the tape records and how backward walks it."""
import threading

import numpy as np
import pytest

import minifuse as mf
from minifuse.autograd import Function


def test_leaf_and_nonleaf_flags():
    x = mf.randn(3, requires_grad=True)
    y = x * 2
    assert x.is_leaf and x.grad_fn is None
    assert not y.is_leaf and y.requires_grad and repr(y.grad_fn) == "<MulBackward>"


def test_shared_input_accumulates_both_paths():
    x = mf.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy() + 1)


def test_grads_accumulate_across_backward_calls():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_diamond_graph_order():
    # a is consumed by b and by c, and b feeds c: a's node must run after both
    x = mf.tensor([0.5, 1.5], requires_grad=True)
    a = x.exp()
    b = a * 2
    c = (a * b).sum()
    c.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp(2 * x.detach().numpy()), rtol=1e-6)


def test_chain_of_10000_ops_has_no_recursion_limit():
    x = mf.tensor([1.0], dtype=mf.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-9)


def test_broadcast_gradient_is_reduced_to_input_shape():
    a = mf.randn(2, 3, 4, requires_grad=True)
    b = mf.randn(3, 1, requires_grad=True)
    (a * b).sum().backward()
    assert b.grad.shape == (3, 1)
    np.testing.assert_allclose(b.grad.numpy(), a.detach().numpy().sum((0, 2))[:, None], rtol=1e-5)


def test_non_scalar_backward_needs_gradient():
    y = mf.randn(3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    y.backward(mf.ones(3))


def test_gradient_shape_is_checked():
    y = mf.randn(3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"gradient has shape \(2,\), expected .*\(3,\)"):
        y.backward(mf.ones(2))


def test_second_backward_through_freed_graph_raises():
    x = mf.randn(3, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward_and_tape_freed_otherwise():
    x = mf.randn(3, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp(x.detach().numpy()), rtol=1e-6)
    assert y.grad_fn._freed and y.grad_fn.inputs is None


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mf.randn(3).sum().backward()


def test_no_grad_records_nothing_and_restores_on_exception():
    x = mf.randn(3, requires_grad=True)
    with mf.no_grad():
        y = x * 2
        assert not mf.is_grad_enabled()
    assert y.grad_fn is None and not y.requires_grad
    with pytest.raises(ZeroDivisionError):
        with mf.no_grad():
            1 / 0
    assert mf.is_grad_enabled()


def test_grad_mode_decorators_and_nesting():
    @mf.no_grad()
    def f(x):
        assert not mf.is_grad_enabled()
        with mf.enable_grad():
            return x * 2

    x = mf.randn(2, requires_grad=True)
    assert f(x).requires_grad
    assert mf.is_grad_enabled()

    @mf.set_grad_enabled(False)
    def g(x):
        return x * 2
    assert mf.is_grad_enabled()  # decorating does not switch the mode
    assert not g(x).requires_grad and mf.is_grad_enabled()


def test_set_grad_enabled_as_call_and_context():
    prev = mf.is_grad_enabled()
    mf.set_grad_enabled(False)
    assert not mf.is_grad_enabled()
    mf.set_grad_enabled(True)
    with mf.set_grad_enabled(False):
        assert not mf.is_grad_enabled()
    assert mf.is_grad_enabled() == prev


def test_grad_mode_is_thread_local():
    seen = []
    with mf.no_grad():
        t = threading.Thread(target=lambda: seen.append(mf.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_detach_cuts_the_tape():
    x = mf.randn(3, requires_grad=True)
    y = (x * 2).detach()
    assert y.is_leaf and not y.requires_grad
    z = x.detach()
    assert np.shares_memory(z.data, x.data)


class ScaledCube(Function):
    """A user-defined op: out = scale * x^3, with ctx.save_for_backward and needs_input_grad."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return scale * x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        assert ctx.needs_input_grad == (True, False)
        return g * 3 * ctx.scale * x ** 2, None


def test_custom_function_apply_and_gradcheck():
    x = mf.randn(4, dtype=mf.float64, requires_grad=True)
    y = ScaledCube.apply(x, 2.0)
    assert repr(y.grad_fn) == "<ScaledCubeBackward>"
    assert mf.autograd.gradcheck(lambda t: ScaledCube.apply(t, 2.0), x)


class SplitTwo(Function):
    """Two outputs: the engine feeds zeros for an output that got no gradient."""

    @staticmethod
    def forward(ctx, x):
        return x * 2, x * 3

    @staticmethod
    def backward(ctx, ga, gb):
        return ga * 2 + gb * 3


def test_multi_output_function():
    x = mf.randn(3, dtype=mf.float64, requires_grad=True)
    a, b = SplitTwo.apply(x)
    b.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 3.0))
    assert mf.autograd.gradcheck(lambda t: SplitTwo.apply(t), x)


def test_function_returning_wrong_shape_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return np.ones(7)

    x = mf.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadBackward returned a gradient of shape \(7,\)"):
        Bad.apply(x).backward()


def test_no_node_recorded_when_no_input_requires_grad():
    y = mf.randn(3) * mf.randn(3)
    assert y.grad_fn is None and not y.requires_grad


class _Fresh(Function):
    """Returns one new array for its first input and the same array for its other two."""
    new_gradients = True

    @staticmethod
    def forward(ctx, a, b, c):
        return a + b + c

    @staticmethod
    def backward(ctx, g):
        shared = g * 2
        return g * 3, shared, shared


def test_a_new_gradient_becomes_the_leafs_grad_and_shared_ones_are_copied():
    a, b, c = (mf.tensor([1.0, 2.0], requires_grad=True) for _ in range(3))
    captured = []

    class Spy(_Fresh):
        @staticmethod
        def backward(ctx, g):
            out = _Fresh.backward(ctx, g)
            captured.extend(out)
            return out
    Spy.apply(a, b, c).sum().backward()
    assert a.grad.data is captured[0]                     # kept as it is: nothing else holds it
    assert b.grad.data is not captured[1] and c.grad.data is not captured[2]
    assert not np.shares_memory(b.grad.data, c.grad.data)  # one array returned twice: two .grads
    b.grad.data[0] = 99.0
    np.testing.assert_array_equal(c.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 3.0])


def test_gradients_of_ops_that_return_views_are_copied():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    y = mf.tensor([3.0, 4.0], requires_grad=True)
    (x + y).sum().backward()                              # add hands one array to both inputs
    assert not np.shares_memory(x.grad.data, y.grad.data)
    x.grad.data[0] = 7.0
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])


def test_fused_function_gradients_are_kept_and_correct():
    from minifuse import fusions
    rng = np.random.default_rng(0)
    x = mf.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    w = mf.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = mf.tensor(rng.standard_normal(3), requires_grad=True)
    fusions.fused_linear_act(x, w, b, "gelu").sum().backward()
    ref = [t.grad.numpy().copy() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    mf.nn.functional.gelu(mf.nn.functional.linear(x, w, b)).sum().backward()
    for got, t in zip(ref, (x, w, b)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-12)
