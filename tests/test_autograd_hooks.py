"""Post-accumulate-grad hooks and queued callbacks: when they fire during backward."""
import numpy as np
import pytest

import minifuse as mf
from minifuse.autograd import engine


def test_hook_fires_once_after_every_contribution():
    w = mf.tensor(np.arange(3.0), requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((w * 2).sum() + (w * w).sum() + w.sum()).backward()   # three nodes use w
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], 2 + 2 * np.arange(3.0) + 1)


def test_hook_order_follows_backward_and_sees_accumulated_grad():
    a = mf.tensor(np.ones(2), requires_grad=True)
    b = mf.tensor(np.ones(2), requires_grad=True)
    order = []
    for name, t in (("a", a), ("b", b)):
        t.register_post_accumulate_grad_hook(lambda t, name=name: order.append((name, float(t.grad.numpy()[0]))))
    h = (a * 3).exp()                      # b is final at the first Mul, a only after Exp
    loss = (h * b).sum()
    loss.backward()
    loss2 = (a * b).sum()
    loss2.backward()                       # accumulates: the hook sees the sum of both backwards
    assert [n for n, _ in order[:2]] == ["b", "a"]
    assert order[2:] and {n for n, _ in order[2:]} == {"a", "b"}
    assert dict(order[2:])["a"] == pytest.approx(3 * np.exp(3.0) + 1)


def test_hook_on_a_root_leaf_and_unused_leaf():
    w = mf.tensor(np.ones(2), requires_grad=True)
    unused = mf.tensor(np.ones(2), requires_grad=True)
    fired = []
    w.register_post_accumulate_grad_hook(lambda t: fired.append("w"))
    unused.register_post_accumulate_grad_hook(lambda t: fired.append("unused"))
    w.backward(mf.tensor(np.ones(2)))
    assert fired == ["w"]


def test_handle_remove_and_callbacks_run_after_the_walk():
    w = mf.tensor(np.ones(2), requires_grad=True)
    events = []

    def hook(t):
        events.append("hook")
        engine.queue_callback(lambda: events.append("done"))

    handle = w.register_post_accumulate_grad_hook(hook)
    (w * w).sum().backward()
    assert events == ["hook", "done"]
    handle.remove()
    (w * w).sum().backward()
    assert events == ["hook", "done"]


def test_hook_errors():
    with pytest.raises(RuntimeError, match="leaf"):
        (mf.tensor(np.ones(2), requires_grad=True) * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="not requiring grad"):
        mf.tensor(np.ones(2)).register_post_accumulate_grad_hook(print)
    with pytest.raises(TypeError, match="callable"):
        mf.tensor(np.ones(2), requires_grad=True).register_post_accumulate_grad_hook(3)
    with pytest.raises(RuntimeError, match="no backward is running"):
        engine.queue_callback(print)


def test_each_backward_has_its_own_token():
    w = mf.tensor(np.ones(2), requires_grad=True)
    tokens = []
    w.register_post_accumulate_grad_hook(lambda t: tokens.append(engine.current_backward()))
    for _ in range(2):
        (w * w).sum().backward()
    assert engine.current_backward() is None
    assert len(tokens) == 2 and tokens[0] is not None and tokens[0] is not tokens[1]


def test_a_raising_hook_leaves_no_backward_running():
    w = mf.tensor(np.ones(2), requires_grad=True)

    def boom(t):
        engine.queue_callback(lambda: pytest.fail("a callback of a failed backward ran"))
        raise ValueError("boom")

    handle = w.register_post_accumulate_grad_hook(boom)
    with pytest.raises(ValueError, match="boom"):
        (w * w).sum().backward()
    assert engine.current_backward() is None
    handle.remove()
    with pytest.raises(RuntimeError, match="no backward is running"):
        engine.queue_callback(print)
