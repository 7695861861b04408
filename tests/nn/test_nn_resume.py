"""Checkpointing a training run: model and optimizer state through mf.save / mf.load, and a
resumed run that equals an uninterrupted one bit for bit."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
import minifuse.optim as optim
from testdevice import DEVICE

OPTIMIZERS = {
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True),
}


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def build(seed, make_optimizer):
    mf.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).to(DEVICE)
    return model, make_optimizer(model.parameters())


def train(model, opt, steps):
    for x, y in steps:
        opt.zero_grad()
        ((model(mf.tensor(x).to(DEVICE)) - mf.tensor(y).to(DEVICE)) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, name):
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((4, 5), np.float32), rng.standard_normal((4, 2), np.float32)) for _ in range(6)]

    model, opt = build(0, OPTIMIZERS[name])
    train(model, opt, data)

    first, opt1 = build(0, OPTIMIZERS[name])
    train(first, opt1, data[:3])
    mf.save(first, tmp_path / "model.safetensors")
    mf.save(opt1.state_dict(), tmp_path / "optimizer.safetensors")

    resumed, opt2 = build(1, OPTIMIZERS[name])         # different initial weights, fresh state
    resumed.load_state_dict(mf.load(tmp_path / "model.safetensors"))
    opt2.load_state_dict(mf.load(tmp_path / "optimizer.safetensors"))
    assert opt2.param_groups[0]["lr"] == opt1.param_groups[0]["lr"]
    train(resumed, opt2, data[3:])

    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), k


def test_optimizer_state_round_trips_with_its_types(tmp_path):
    model, opt = build(0, OPTIMIZERS["adamw"])
    train(model, opt, [(np.ones((2, 5), np.float32), np.zeros((2, 2), np.float32))])
    saved = opt.state_dict()
    mf.save(saved, tmp_path / "o.safetensors")
    back = mf.load(tmp_path / "o.safetensors")
    assert back["param_groups"] == saved["param_groups"]
    assert type(back["param_groups"][0]["betas"]) is tuple
    assert list(back["state"]) == list(saved["state"]) == [0, 1, 2, 3]
    for i, s in saved["state"].items():
        assert back["state"][i]["step"] == s["step"] == 1
        assert back["state"][i]["exp_avg"].numpy().tobytes() == host(s["exp_avg"]).tobytes()


def test_a_lossy_optimizer_state_is_refused_before_anything_changes():
    model, opt = build(0, OPTIMIZERS["sgd-momentum"])
    saved = opt.state_dict()
    saved["state"] = {0: {"momentum_buffer": np.full((8, 5), 1e300)}}
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\]: the value 1e\+300 does not fit float32"):
        opt.load_state_dict(saved)
    assert opt.state == {}
