"""Optimizers against hand-computed steps (PyTorch's formulas), state_dict and zero_grad."""
import math

import numpy as np
import pytest

import minifuse as mf
from minifuse import optim


def param(values):
    return mf.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def run(opt_cls, grads, p0=(1.0, -2.0), **kw):
    """Apply the given gradient sequence; return the parameter after each step."""
    p = param(p0)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = mf.tensor(np.array(g, dtype=np.float64))
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


G = [(0.5, -1.0), (0.2, 0.3), (-0.4, 0.1)]


def test_plain_sgd():
    out = run(optim.SGD, G[:1], lr=0.1)
    np.testing.assert_allclose(out[0], [1 - 0.05, -2 + 0.1])


def test_sgd_momentum_dampening_weight_decay_by_hand():
    lr, mu, damp, wd = 0.1, 0.9, 0.2, 0.01
    p, buf = np.array([1.0, -2.0]), None
    want = []
    for i, g in enumerate(np.array(G)):
        d = g + wd * p
        buf = d.copy() if buf is None else mu * buf + (1 - damp) * d  # first step: no dampening
        p = p - lr * buf
        want.append(p)
    got = run(optim.SGD, G, lr=lr, momentum=mu, dampening=damp, weight_decay=wd)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_sgd_nesterov_by_hand():
    lr, mu = 0.1, 0.9
    # step 1: b = g1; p -= lr (g1 + mu b);  step 2: b = mu b + g2; p -= lr (g2 + mu b)
    g1, g2 = np.array(G[0]), np.array(G[1])
    p1 = np.array([1.0, -2.0]) - lr * (g1 + mu * g1)
    b2 = mu * g1 + g2
    p2 = p1 - lr * (g2 + mu * b2)
    got = run(optim.SGD, G[:2], lr=lr, momentum=mu, nesterov=True)
    np.testing.assert_allclose(got, [p1, p2], rtol=1e-14)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([param([1.0])], momentum=0.9, dampening=0.1, nesterov=True)


def test_adam_first_step_is_lr_times_sign():
    # bias correction makes m_hat = g and v_hat = g^2 at t=1, so the step is lr * g / (|g| + eps)
    got = run(optim.Adam, G[:1], lr=0.01)
    np.testing.assert_allclose(got[0], [1 - 0.01 * 0.5 / (0.5 + 1e-8), -2 + 0.01 * 1 / (1 + 1e-8)], rtol=1e-14)


def _adam_by_hand(lr, b1, b2, eps, wd, decoupled, steps):
    p, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    out = []
    for t, g in enumerate(np.array(G[:steps]), start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("cls,decoupled", [(optim.Adam, False), (optim.AdamW, True)])
def test_adam_and_adamw_three_steps_by_hand(cls, decoupled):
    kw = dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)
    got = run(cls, G, **kw)
    np.testing.assert_allclose(got, _adam_by_hand(0.05, 0.8, 0.9, 1e-3, 0.1, decoupled, 3), rtol=1e-13)


def test_adamw_default_decay_and_amsgrad_uses_max():
    assert optim.AdamW([param([1.0])]).param_groups[0]["weight_decay"] == 0.01
    # amsgrad: step 2 has a smaller gradient, so v_max keeps step 1's v
    p = param([0.0])
    opt = optim.Adam([p], lr=0.1, betas=(0.0, 0.5), eps=0.0, amsgrad=True)
    for g in (2.0, 0.1):
        p.grad = mf.tensor([g], dtype=mf.float64)
        opt.step()
    v1 = 0.5 * 4.0
    v2 = max(v1, 0.5 * v1 + 0.5 * 0.01)
    want = -0.1 * 2 / (math.sqrt(v1) / math.sqrt(0.5)) - 0.1 * 0.1 / (math.sqrt(v2) / math.sqrt(0.75))
    assert math.isclose(p.item(), want, rel_tol=1e-13)


def test_param_groups_zero_grad_and_skip_params_without_grad():
    a, b = param([1.0]), param([1.0])
    opt = optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b]}], lr=0.1)
    a.grad = mf.tensor([1.0], dtype=mf.float64)
    opt.step()
    assert a.item() == 0.0 and b.item() == 1.0  # b has no grad: untouched
    opt.zero_grad(set_to_none=False)
    assert a.grad.item() == 0.0
    opt.zero_grad()
    assert a.grad is None
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [a]}, {"params": [a]}])


def test_optimizer_state_dict_round_trip_continues_identically():
    a = run(optim.AdamW, G, lr=0.1)
    p = param((1.0, -2.0))
    opt = optim.AdamW([p], lr=0.1)
    for g in G[:2]:
        p.grad = mf.tensor(np.array(g))
        opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["state"][0]["step"] == 2
    opt2 = optim.AdamW([p], lr=999.0)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.1
    p.grad = mf.tensor(np.array(G[2]))
    opt2.step()
    np.testing.assert_array_equal(p.detach().numpy(), a[2])
    with pytest.raises(ValueError, match="parameters"):
        optim.AdamW([p, param([1.0])]).load_state_dict(sd)


def test_step_is_not_recorded_on_the_tape():
    p = param([1.0, 2.0])
    (p * p).sum().backward()
    optim.SGD([p], lr=0.1).step()
    assert p.is_leaf and p.grad_fn is None
