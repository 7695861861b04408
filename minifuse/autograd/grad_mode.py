"""Grad mode: one thread-local flag that says whether ops record onto the tape.

``no_grad``, ``enable_grad`` and ``set_grad_enabled`` work as context managers and as decorators
(of functions and of generator functions, whose body runs in the mode each time it resumes).
The previous mode is restored on exit, also when an exception leaves the block.
"""
import functools
import inspect
import threading

__all__ = ["is_grad_enabled", "no_grad", "enable_grad", "set_grad_enabled"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when ops record onto the tape (the default in every thread)."""
    return getattr(_state, "enabled", True)


def _set(flag: bool):
    _state.enabled = bool(flag)


class _GradMode:
    """Base: sets the flag on enter, restores it on exit; a fresh instance per decorated call.

    The saved modes are a stack per thread, so one instance entered by several threads at once
    (a module-level ``no_grad()``) restores each thread's own mode."""

    enabled = True

    def __init__(self):
        self._saved = threading.local()

    @property
    def _prev(self):
        stack = getattr(self._saved, "stack", None)
        if stack is None:
            stack = self._saved.stack = []
        return stack

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _set(self.enabled)
        return self

    def __exit__(self, *exc):
        _set(self._prev.pop())
        return False

    def _clone(self):
        return type(self)()

    def __call__(self, fn):
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._clone():
                return fn(*args, **kwargs)
        return wrapper

    def _wrap_generator(self, fn):
        """The generator's body runs in this mode each time it is resumed; the caller's code
        between two ``next`` calls runs in the caller's mode (as PyTorch does)."""
        def step(method, *args):
            with self._clone():
                return method(*args)

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            gen = fn(*args, **kwargs)
            try:
                response = step(gen.send, None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        step(gen.close)
                        raise
                    except BaseException as e:
                        response = step(gen.throw, e)
                    else:
                        response = step(gen.send, request)
            except StopIteration as stop:
                return stop.value
        return generator


class no_grad(_GradMode):
    """Disable recording: ``with mf.no_grad(): y = model(x)`` or ``@mf.no_grad()``."""

    enabled = False


class enable_grad(_GradMode):
    """Enable recording inside a ``no_grad`` block."""

    enabled = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(flag)`` sets the mode at once (like PyTorch); used as a context manager
    it restores the previous mode on exit, used as a decorator it sets the mode per call."""

    def __init__(self, mode: bool):
        super().__init__()
        self.enabled = bool(mode)
        self._prev.append(is_grad_enabled())
        _set(self.enabled)

    def __enter__(self):
        return self  # the mode was already set in __init__

    def __call__(self, fn):
        _set(self._prev.pop())  # decorating is not entering: undo the immediate switch
        return super().__call__(fn)

    def _clone(self):
        mode = _GradMode()
        mode.enabled = self.enabled
        return mode
