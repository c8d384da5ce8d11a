"""Learning-rate schedules: plain functions of the iteration number (floor 4).

Every schedule starts with the same linear warm-up (nanoGPT's), for it < warmup_iters:

    lr(it) = max_lr * (it + 1) / (warmup_iters + 1)

so the first step already moves (lr > 0) and the rate reaches max_lr at it = warmup_iters.
After the warm-up, with r = (it - warmup_iters) / (lr_decay_iters - warmup_iters) in [0, 1]:

    cosine:    lr = min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)
    linear:    lr = max_lr + r * (min_lr - max_lr)
    constant:  lr = max_lr                              (min_lr and lr_decay_iters unused)

and lr = min_lr for it > lr_decay_iters (cosine, linear). `cosine_with_warmup` is exactly
nanoGPT's `get_lr`. A trainer sets the rate before each step:

    >>> schedule = get_schedule("cosine", max_lr=1e-3, min_lr=1e-4, warmup_iters=100,
    ...                         lr_decay_iters=2000)
    >>> for group in optimizer.param_groups:
    ...     group["lr"] = schedule(it)

Imports: tinygpt.validate.
"""

import math

from .. import validate


def _check(it, max_lr, min_lr, warmup_iters, lr_decay_iters):
    validate.integer("the iteration", it, minimum=0)
    validate.real("max_lr", max_lr, minimum=0)
    validate.real("min_lr", min_lr, minimum=0)
    if min_lr > max_lr:
        raise ValueError(f"min_lr must be in [0, max_lr={max_lr}], got {min_lr}")
    validate.integer("warmup_iters", warmup_iters, minimum=0)
    validate.integer("lr_decay_iters", lr_decay_iters, minimum=0)
    if lr_decay_iters < warmup_iters:
        raise ValueError(
            f"lr_decay_iters ({lr_decay_iters}) must be >= warmup_iters ({warmup_iters})")


def _decay_ratio(it, warmup_iters, lr_decay_iters):
    """r in [0, 1]: how far `it` is into the decay (1 when the decay span is empty)."""
    span = lr_decay_iters - warmup_iters
    return 1.0 if span == 0 else (it - warmup_iters) / span


def cosine_with_warmup(it, max_lr, min_lr, warmup_iters, lr_decay_iters):
    """Linear warm-up to max_lr, then a half cosine down to min_lr at lr_decay_iters, then
    min_lr (nanoGPT's `get_lr`)."""
    _check(it, max_lr, min_lr, warmup_iters, lr_decay_iters)
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = _decay_ratio(it, warmup_iters, lr_decay_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))    # from 1 down to 0
    return min_lr + coeff * (max_lr - min_lr)


def linear_schedule(it, max_lr, min_lr, warmup_iters, lr_decay_iters):
    """Linear warm-up to max_lr, then a straight line down to min_lr at lr_decay_iters,
    then min_lr."""
    _check(it, max_lr, min_lr, warmup_iters, lr_decay_iters)
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = _decay_ratio(it, warmup_iters, lr_decay_iters)
    return max_lr + ratio * (min_lr - max_lr)


def constant(it, max_lr, min_lr=0.0, warmup_iters=0, lr_decay_iters=None):
    """Linear warm-up to max_lr (none by default), then max_lr for ever."""
    _check(it, max_lr, 0.0, warmup_iters, warmup_iters)
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    return max_lr


SCHEDULES = {"cosine": cosine_with_warmup, "linear": linear_schedule, "constant": constant}


class Schedule:
    """A schedule with its arguments bound: `schedule(it) -> lr` (a Python float)."""

    def __init__(self, name, max_lr, min_lr=0.0, warmup_iters=0, lr_decay_iters=None):
        if name not in SCHEDULES:
            raise ValueError(
                f"unknown learning-rate schedule {name!r}: expected one of {sorted(SCHEDULES)}")
        if lr_decay_iters is None:
            if name != "constant":
                raise ValueError(f"the {name!r} schedule needs lr_decay_iters")
            lr_decay_iters = warmup_iters
        _check(0, max_lr, min_lr, warmup_iters, lr_decay_iters)    # before any conversion
        self.name, self.fn = name, SCHEDULES[name]
        self.max_lr, self.min_lr = float(max_lr), float(min_lr)
        self.warmup_iters, self.lr_decay_iters = int(warmup_iters), int(lr_decay_iters)
        self(0)  # check the arguments now rather than at the first step

    def __call__(self, it):
        return self.fn(it, self.max_lr, self.min_lr, self.warmup_iters, self.lr_decay_iters)

    def __repr__(self):
        return (f"Schedule({self.name!r}, max_lr={self.max_lr}, min_lr={self.min_lr}, "
                f"warmup_iters={self.warmup_iters}, lr_decay_iters={self.lr_decay_iters})")


def get_schedule(name, max_lr, min_lr=0.0, warmup_iters=0, lr_decay_iters=None):
    """The schedule called `name` ("cosine", "linear" or "constant") with its arguments
    bound: a callable it -> lr."""
    return Schedule(name, max_lr, min_lr, warmup_iters, lr_decay_iters)
