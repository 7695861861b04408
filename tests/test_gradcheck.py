"""gradcheck must catch wrong backwards, or every other gradient test proves nothing."""
import numpy as np
import pytest

import minifuse as mf
from minifuse.autograd import Function, GradcheckError, gradcheck


def _scaled_exp(factor):
    """exp with a backward multiplied by ``factor`` (1.0 is correct)."""

    class ScaledExp(Function):
        @staticmethod
        def forward(ctx, x):
            out = np.exp(x)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * out * factor

    return ScaledExp.apply


def _x(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return mf.tensor(rng.standard_normal(shape), requires_grad=True)


def test_passes_a_correct_backward():
    assert gradcheck(_scaled_exp(1.0), _x(3, 4))
    assert gradcheck(_scaled_exp(1.0), _x(3, 4), fast_mode=True)


@pytest.mark.parametrize("fast_mode", [False, True])
def test_catches_backward_off_by_a_tenth_of_a_percent(fast_mode):
    # The defaults (PyTorch's, rtol=1e-3) accept up to 0.1% by definition; central differences in
    # float64 are accurate to ~1e-9, so a tighter rtol catches 0.1% and still passes correct code.
    tight = dict(rtol=1e-4, atol=1e-8, fast_mode=fast_mode)
    assert gradcheck(_scaled_exp(1.0), _x(3, 4), **tight)
    with pytest.raises(GradcheckError, match=r"inputs\[0\]"):
        gradcheck(_scaled_exp(1.001), _x(3, 4), **tight)


@pytest.mark.parametrize("fast_mode", [False, True])
def test_catches_backward_off_just_past_the_default_tolerance(fast_mode):
    with pytest.raises(GradcheckError, match=r"inputs\[0\]"):
        gradcheck(_scaled_exp(1.0015), _x(3, 4), fast_mode=fast_mode)


def test_names_the_input_and_worst_element():
    bump = np.zeros((2, 3))
    bump[1, 2] = 1.0
    a, b = _x(2, 3, seed=1), _x(2, 3, seed=2)
    # correct in a; in b the backward forgets the bump term at element (1, 2) only
    with pytest.raises(GradcheckError) as err:
        gradcheck(lambda a, b: a * b + _leaky(b, bump), (a, b))
    msg = str(err.value)
    assert "inputs[1]" in msg and "input element (1, 2)" in msg


def _leaky(b, bump):
    """Forward adds bump*b (value), backward forgets it: a wrong gradient at one element."""

    class Leaky(Function):
        @staticmethod
        def forward(ctx, x):
            return x * bump

        @staticmethod
        def backward(ctx, g):
            return g * 0

    return Leaky.apply(b)


def test_returns_false_without_raising():
    assert gradcheck(_scaled_exp(1.01), _x(2), raise_exception=False) is False


def test_detects_backward_not_linear_in_incoming_gradient():
    class Squared(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return g * g  # not linear in g

    with pytest.raises(GradcheckError, match="not linear"):
        gradcheck(Squared.apply, _x(3))


def test_detects_nondeterministic_backward():
    rng = np.random.default_rng(0)

    class Noisy(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return g * (1 + 1e-3 * rng.standard_normal())

    with pytest.raises(GradcheckError, match="not deterministic"):
        gradcheck(Noisy.apply, _x(3))


def test_requires_float64_and_a_grad_input():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, mf.randn(3, requires_grad=True))
    with pytest.raises(ValueError, match="requires grad"):
        gradcheck(lambda t: t * 2, mf.randn(3, dtype=mf.float64))


def test_leaves_the_callers_tensors_untouched():
    x = _x(3)
    before = x.detach().numpy().copy()
    gradcheck(lambda t: (t * t).sum(), x)
    assert x.grad is None
    np.testing.assert_array_equal(x.detach().numpy(), before)
