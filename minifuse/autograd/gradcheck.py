"""Finite-difference gradient checking, the proof that a backward is right.

``gradcheck(fn, inputs)`` compares the Jacobian that backward computes (row by row, one
vector-Jacobian product per output element) with central differences
``(f(x + eps e_j) - f(x - eps e_j)) / (2 eps)`` in float64. In fast mode both sides are projected
onto random vectors: ``v . (J u)`` numerically against ``(v J) . u`` from one backward, per input.
It also checks that backward is linear in the incoming gradient and gives the same answer twice.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import float64
from .engine import backward
from .grad_mode import enable_grad, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """Raised by ``gradcheck`` when analytic and numerical gradients disagree."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(fn, args):
    from ..tensor import Tensor
    outs = _as_tuple(fn(*args))
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(o).__name__}")
    return outs


def _vjp(fn, args, wrt, out_grads):
    """Gradients of sum_k <outputs[k], out_grads[k]> with respect to args[i] for i in wrt."""
    for i in wrt:
        args[i].grad = None
    with enable_grad():
        outs = _outputs(fn, args)
    pairs = [(o, g) for o, g in zip(outs, out_grads) if o.requires_grad]
    if pairs:
        backward([o for o, _ in pairs], [g for _, g in pairs])
    return [np.zeros(args[i].shape) if args[i].grad is None else np.asarray(args[i].grad, dtype=np.float64)
            for i in wrt]


def _eval(fn, args):
    with no_grad():
        return [np.asarray(o, dtype=np.float64) for o in _outputs(fn, args)]


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=False, raise_exception=True,
              seed=0):
    """True when backward of ``fn`` matches central differences at ``inputs``.

    ``inputs`` is a Tensor or a tuple of arguments; the Tensors with ``requires_grad`` are checked
    and must be float64. Passes where ``|analytic - numerical| <= atol + rtol * |numerical|``
    for every Jacobian element (or for the projections in ``fast_mode``). On failure, raises
    ``GradcheckError`` naming the input and the worst element, or returns False.
    """
    from ..tensor import Tensor
    given = _as_tuple(inputs)
    # private leaf copies, so the user's tensors and their .grad are left alone
    args = [Tensor(a.data.copy(), requires_grad=a.requires_grad) if isinstance(a, Tensor) else a
            for a in given]
    wrt = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad; call requires_grad_() on the inputs to check")
    for i in wrt:
        if args[i].dtype != float64:
            raise TypeError(f"gradcheck: inputs[{i}] is {args[i].dtype}; finite differences need float64 "
                            f"inputs (use .double())")

    base = _eval(fn, args)
    rng = np.random.default_rng(seed)
    out_shapes = [b.shape for b in base]
    dt = args[wrt[0]].dtype
    xp = args[wrt[0]].xp  # perturbations and incoming gradients live on the inputs' device

    def dev(array):
        return Tensor(xp.asarray(array.astype(dt)))

    def numerical_directional(i, u):
        x = args[i].data
        orig = x.copy()
        u = xp.asarray(u)
        x[...] = orig + eps * u
        plus = _eval(fn, args)
        x[...] = orig - eps * u
        minus = _eval(fn, args)
        x[...] = orig
        return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]

    # ---- backward must be linear in the incoming gradient and deterministic ----
    v = [rng.standard_normal(s) for s in out_shapes]
    g1 = _vjp(fn, args, wrt, [dev(x) for x in v])
    g2 = _vjp(fn, args, wrt, [dev(x) for x in v])
    g3 = _vjp(fn, args, wrt, [dev(2.5 * x) for x in v])
    for k, i in enumerate(wrt):
        if not np.allclose(g1[k], g2[k], rtol=0, atol=0, equal_nan=True):
            return _fail(f"gradcheck: backward is not deterministic for inputs[{i}]: two identical "
                         f"calls gave different gradients", raise_exception)
        if not np.allclose(g3[k], 2.5 * g1[k], rtol=1e-10, atol=1e-12, equal_nan=True):
            return _fail(f"gradcheck: backward is not linear in the incoming gradient for inputs[{i}]: "
                         f"backward(2.5 g) != 2.5 backward(g)", raise_exception)

    for k, i in enumerate(wrt):
        n_in = args[i].data.size
        if fast_mode:
            u = rng.standard_normal(args[i].shape)
            num = sum(float((vv * d).sum()) for vv, d in zip(v, numerical_directional(i, u)))
            ana = float((g1[k] * u).sum())
            if not abs(ana - num) <= atol + rtol * abs(num):
                return _fail(f"gradcheck (fast mode): Jacobian mismatch for inputs[{i}] "
                             f"(shape {args[i].shape}): projected analytic {ana:.10g} vs numerical "
                             f"{num:.10g}", raise_exception)
            continue
        # full Jacobian, one column (input element) and one row (output element) at a time
        for o, shape in enumerate(out_shapes):
            n_out = int(np.prod(shape))
            num = np.empty((n_out, n_in))
            for j in range(n_in):
                e = np.zeros(n_in)
                e[j] = 1.0
                num[:, j] = numerical_directional(i, e.reshape(args[i].shape))[o].ravel()
            ana = np.empty((n_out, n_in))
            for r in range(n_out):
                onehot = [np.zeros(s) for s in out_shapes]
                onehot[o].flat[r] = 1.0
                ana[r] = _vjp(fn, args, [i], [dev(x) for x in onehot])[0].ravel()
            err = np.abs(ana - num) - (atol + rtol * np.abs(num))
            bad = ~(err <= 0)  # NaN counts as a failure
            if bad.any():
                r, j = np.unravel_index(np.nanargmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -np.inf)),
                                        err.shape)
                out_idx = np.unravel_index(r, shape) if shape else ()
                in_idx = np.unravel_index(j, args[i].shape)
                return _fail(f"gradcheck: Jacobian mismatch for inputs[{i}] (shape {args[i].shape}), "
                             f"output {o}: worst at output element {tuple(map(int, out_idx))}, input element "
                             f"{tuple(map(int, in_idx))}: analytic {ana[r, j]:.10g} vs numerical "
                             f"{num[r, j]:.10g} ({int(bad.sum())} of {bad.size} elements off; atol={atol}, "
                             f"rtol={rtol})", raise_exception)
    return True
