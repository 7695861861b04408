"""Grad mode and fusion switches shared across threads, and as decorators of generators."""
import threading

import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse.nn import dispatch


def run_interleaved(shared, before_b, read):
    """Thread A enters ``shared``, then thread B (whose state ``before_b`` set first), then A
    exits, then B: -> (A's state after its exit, B's state after its exit)."""
    steps = [threading.Event() for _ in range(3)]
    seen = {}

    def a():
        with shared:
            steps[0].set()
            steps[1].wait(5)
        seen["a"] = read()
        steps[2].set()

    def b():
        before_b()
        steps[0].wait(5)
        with shared:
            steps[1].set()
            steps[2].wait(5)
        seen["b"] = read()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen["a"], seen["b"]


def test_one_no_grad_instance_in_two_threads_restores_each_threads_mode():
    shared = mf.no_grad()
    a, b = run_interleaved(shared, lambda: mf.set_grad_enabled(False), mf.is_grad_enabled)
    assert (a, b) == (True, False)
    assert mf.is_grad_enabled()


def test_one_fusion_instance_in_two_threads_restores_each_threads_setting():
    shared = nn.fusion(False)
    a, b = run_interleaved(shared, lambda: nn.set_fusion_enabled(False), dispatch.fusion_enabled)
    assert (a, b) == (dispatch.DEFAULT_FUSION, False)


def test_no_grad_on_a_generator_function_covers_its_body():
    @mf.no_grad()
    def flags(n):
        received = []
        for _ in range(n):
            received.append((yield mf.is_grad_enabled()))
        return received

    assert list(flags(3)) == [False, False, False]
    for flag in flags(2):
        assert flag is False and mf.is_grad_enabled()     # the caller's mode between the steps
    gen = flags(2)
    assert next(gen) is False and gen.send("x") is False
    with pytest.raises(StopIteration) as stop:
        gen.send("y")
    assert stop.value.value == ["x", "y"]


def test_an_exception_thrown_into_a_decorated_generator_reaches_its_body():
    log = []

    @mf.no_grad()
    def guarded():
        try:
            yield 1
        except KeyError:
            log.append(("caught", mf.is_grad_enabled()))
            yield 2
        finally:
            log.append(("closed", mf.is_grad_enabled()))

    gen = guarded()
    assert next(gen) == 1 and gen.throw(KeyError("k")) == 2
    gen.close()
    assert log == [("caught", False), ("closed", False)] and mf.is_grad_enabled()


def test_enable_grad_and_fusion_decorate_generators_too():
    @mf.enable_grad()
    def inner():
        yield mf.is_grad_enabled()

    @nn.fusion(False)
    def unfused():
        yield dispatch.fusion_enabled()

    with mf.no_grad():
        assert list(inner()) == [True]
    assert list(unfused()) == [False]
