"""optim.lr_scheduler: the rates each scheduler sets, epoch by epoch, against PyTorch's formulas."""
import math

import pytest

import minifuse as mf
from minifuse import optim
from minifuse.optim import lr_scheduler as S


def _opt(lr=1.0, groups=1):
    params = [{"params": [mf.zeros(1, requires_grad=True)], "lr": lr * (i + 1)} for i in range(groups)]
    return optim.SGD(params, lr=lr)


def _rates(scheduler, epochs):
    """The lr of each group during epochs 0 .. epochs-1 (step() after each)."""
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in scheduler.optimizer.param_groups])
        assert out[-1] == scheduler.get_last_lr()
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_step_exponential_and_lambda():
    assert _rates(S.StepLR(_opt(), step_size=2, gamma=0.5), 5) == [[1.0], [1.0], [0.5], [0.5], [0.25]]
    assert _rates(S.ExponentialLR(_opt(2.0), gamma=0.5), 3) == [[2.0], [1.0], [0.5]]
    two = _opt(groups=2)
    got = _rates(S.LambdaLR(two, [lambda e: e + 1, lambda e: 0.5 ** e]), 3)
    assert got == [[1.0, 2.0], [2.0, 1.0], [3.0, 0.5]]


def test_linear_warm_up_and_cosine():
    got = _rates(S.LinearLR(_opt(), start_factor=0.25, total_iters=3), 5)
    assert [r[0] for r in got] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    got = _rates(S.CosineAnnealingLR(_opt(), T_max=4, eta_min=0.1), 5)
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert [r[0] for r in got] == pytest.approx(want)


def test_sequential_warm_up_then_cosine():
    opt = _opt(2.0)
    sched = S.SequentialLR(opt, [S.LinearLR(opt, 0.5, total_iters=2), S.CosineAnnealingLR(opt, T_max=3)],
                           milestones=[2])
    got = [r[0] for r in _rates(sched, 6)]
    cos = [2.0 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(4)]
    assert got == pytest.approx([1.0, 1.5] + cos)


def test_state_dict_resumes_the_schedule():
    opt = _opt()
    a = S.StepLR(opt, step_size=1, gamma=0.5)
    _rates(a, 3)
    b = S.StepLR(_opt(), step_size=1, gamma=0.9)
    b.load_state_dict(a.state_dict())
    b.step()
    assert b.get_last_lr() == [0.0625] and b.last_epoch == 4
    assert "optimizer" not in a.state_dict()
    assert "lr_lambdas" not in S.LambdaLR(_opt(), lambda e: 1.0).state_dict()


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="'optimizer' must be an Optimizer"):
        S.StepLR([mf.zeros(1)], 1)
    with pytest.raises(ValueError, match="step_size must be a positive int"):
        S.StepLR(_opt(), 0)
    with pytest.raises(ValueError, match="one function per parameter group"):
        S.LambdaLR(_opt(groups=2), [lambda e: 1.0])
    with pytest.raises(ValueError, match="start_factor"):
        S.LinearLR(_opt(), start_factor=0)
    with pytest.raises(ValueError, match="T_max"):
        S.CosineAnnealingLR(_opt(), T_max=0)
    opt = _opt()
    with pytest.raises(ValueError, match="1 increasing milestones for 2 schedulers"):
        S.SequentialLR(opt, [S.StepLR(opt, 1), S.StepLR(opt, 1)], milestones=[])
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(_opt(), 1, last_epoch=3)
