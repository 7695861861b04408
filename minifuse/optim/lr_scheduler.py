"""Learning-rate schedules, as PyTorch's ``torch.optim.lr_scheduler``: call ``scheduler.step()``
once per epoch (or per batch) after ``optimizer.step()``.

Each scheduler states its rate in closed form, ``lr(epoch) = base_lr * factor(epoch)`` for every
parameter group (``base_lr`` is the group's ``lr`` when the scheduler was made), and writes it into
the optimizer's groups at construction (epoch 0) and at each ``step()``.
"""
from __future__ import annotations

import bisect
import math

from .optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "ExponentialLR", "LinearLR", "CosineAnnealingLR", "SequentialLR"]


class LRScheduler:
    """Base class: subclasses define ``lr_at(base_lr, epoch)`` (or ``lrs_at(epoch)``, one rate
    per parameter group)."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: 'optimizer' must be an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise KeyError(f"{type(self).__name__}: resuming at last_epoch={last_epoch} needs 'initial_lr' in every "
                           f"parameter group (load the optimizer's state_dict first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr, epoch):
        raise NotImplementedError

    def lrs_at(self, epoch):
        return [self.lr_at(base, epoch) for base in self.base_lrs]

    def step(self, epoch=None):
        """Advance one epoch (or jump to ``epoch``) and set every group's ``lr``."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self._last_lr = self.lrs_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self):
        """The rates that the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer and functions (as PyTorch)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)
                and not (isinstance(v, list) and any(callable(f) or isinstance(f, LRScheduler) for f in v))}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


def _per_group(name, value, optimizer):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(optimizer.param_groups)
    if len(values) != len(optimizer.param_groups):
        raise ValueError(f"{name}: expected one function per parameter group ({len(optimizer.param_groups)}), "
                         f"got {len(values)}")
    return values


def _positive_int(op, name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch) (one function, or one per parameter group)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group("LambdaLR", lr_lambda, optimizer)
        super().__init__(optimizer, last_epoch)

    def lrs_at(self, epoch):
        return [base * f(epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)"""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _positive_int("StepLR", "step_size", step_size)
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch"""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class LinearLR(LRScheduler):
    """lr = base_lr * factor, the factor going linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` epochs and staying there: a linear warm-up."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], got "
                             f"{start_factor} and {end_factor}")
        _positive_int("LinearLR", "total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = float(start_factor), float(end_factor), total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        done = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2: from base_lr down to
    eta_min in T_max epochs (SGDR without restarts)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class SequentialLR(LRScheduler):
    """``schedulers[i]`` from epoch ``milestones[i-1]`` on, counting its epochs from 0 there:
    ``SequentialLR(opt, [LinearLR(opt, 0.01, total_iters=100), CosineAnnealingLR(opt, 900)], [100])``
    is a warm-up then a cosine decay."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), list(milestones)
        if len(milestones) != len(schedulers) - 1 or milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: expected {len(schedulers) - 1} increasing milestones for "
                             f"{len(schedulers)} schedulers, got {milestones}")
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ValueError("SequentialLR: every scheduler must belong to 'optimizer'")
        self.schedulers, self.milestones = schedulers, milestones
        for group in optimizer.param_groups:          # the schedulers set lr when made: start over
            group["lr"] = group["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def lrs_at(self, epoch):
        i = bisect.bisect_right(self.milestones, epoch)
        return self.schedulers[i].lrs_at(epoch - (self.milestones[i - 1] if i else 0))
