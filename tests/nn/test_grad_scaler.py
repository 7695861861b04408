"""mf.amp.GradScaler (PyTorch's semantics): exact when nothing overflows, skips and backs off on
Inf/NaN gradients, grows after growth_interval good steps, unscale_ once per step, state_dict."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse import optim


def _model(seed):
    mf.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 1)).to(mf.float64)


def _batches(n=5):
    rng = np.random.default_rng(0)
    return [(mf.tensor(rng.standard_normal((6, 4))), mf.tensor(rng.standard_normal((6, 1)))) for _ in range(n)]


def test_scaled_training_equals_unscaled_when_nothing_overflows():
    plain, scaled = _model(1), _model(1)
    opt_p, opt_s = optim.Adam(plain.parameters(), lr=1e-2), optim.Adam(scaled.parameters(), lr=1e-2)
    scaler = mf.amp.GradScaler(growth_interval=2)
    for x, y in _batches():
        for model, opt in ((plain, opt_p), (scaled, opt_s)):
            opt.zero_grad()
        loss = nn.functional.mse_loss(plain(x), y)
        loss.backward()
        opt_p.step()
        scaler.scale(nn.functional.mse_loss(scaled(x), y)).backward()
        scaler.step(opt_s)
        scaler.update()
    for a, b in zip(plain.parameters(), scaled.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())    # powers of two: exact
    assert scaler.get_scale() == 2.0 ** 16 * 2 ** 2           # five good steps, growth every second one


def test_inf_gradient_skips_the_step_and_backs_off():
    model = _model(2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = mf.amp.GradScaler(init_scale=8.0)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    x, y = _batches(1)[0]
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    next(iter(model.parameters())).grad.data[0, 0] = np.inf
    assert scaler.step(opt) is None
    scaler.update()
    assert scaler.get_scale() == 4.0
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    opt.zero_grad()
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    assert not np.array_equal(next(iter(model.parameters())).detach().numpy(), before[0])


def test_unscale_once_then_clip_then_step():
    model = _model(3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = mf.amp.GradScaler(init_scale=1024.0)
    x, y = _batches(1)[0]
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    scaled = [p.grad.numpy().copy() for p in model.parameters()]
    scaler.unscale_(opt)
    for p, g in zip(model.parameters(), scaled):
        np.testing.assert_array_equal(p.grad.numpy(), g / 1024.0)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)
    scaler.step(opt)                                           # does not unscale a second time
    with pytest.raises(RuntimeError, match="already called"):
        scaler.step(opt)
    scaler.update()
    scaler.unscale_(opt)                                       # a new iteration may unscale again


def test_disabled_is_a_pass_through_and_state_dict_round_trips():
    off = mf.amp.GradScaler(enabled=False)
    t = mf.tensor([1.0, 2.0])
    assert off.scale(t) is t and off.get_scale() == 1.0 and off.state_dict() == {}
    on = mf.amp.GradScaler(init_scale=32.0, growth_interval=3)
    state = on.state_dict()
    assert state == {"scale": 32.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3,
                     "_growth_tracker": 0}
    other = mf.amp.GradScaler()
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({"scale": 1.0})
    assert [s.detach().numpy().tolist() for s in on.scale([t, t])] == [[32.0, 64.0]] * 2


def test_bad_arguments_and_float16_gradients_are_refused():
    for kwargs, match in (({"init_scale": 0}, "init_scale"), ({"growth_factor": 1.0}, "growth_factor"),
                          ({"backoff_factor": 1.5}, "backoff_factor"), ({"growth_interval": 0}, "growth_interval")):
        with pytest.raises(ValueError, match=match):
            mf.amp.GradScaler(**kwargs)
    with pytest.raises(TypeError, match="outputs"):
        mf.amp.GradScaler().scale(3.0)
    model = nn.Linear(3, 2).to(mf.float16)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = mf.amp.GradScaler(init_scale=4.0)
    scaler.scale(model(mf.randn(2, 3).to(mf.float16)).sum()).backward()
    with pytest.raises(ValueError, match="float16 gradients"):
        scaler.step(opt)
