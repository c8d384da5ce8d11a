"""Learning-rate schedules: values at known iterations (start, end of warm-up, middle of the
decay, end of the decay, beyond), shape, lookup by name, bad arguments."""

import math

import pytest

from tinygpt.optim import (SCHEDULES, constant, cosine_with_warmup, get_schedule,
                           linear_schedule)

MAX, MIN, WARMUP, DECAY = 1e-3, 1e-4, 100, 2000   # nanoGPT's Shakespeare recipe
MID = (WARMUP + DECAY) // 2                        # 1050: halfway through the decay


@pytest.mark.parametrize("it, expected", [
    (0, MAX / (WARMUP + 1)),            # warm-up starts above zero
    (49, MAX * 50 / (WARMUP + 1)),
    (WARMUP - 1, MAX * WARMUP / (WARMUP + 1)),
    (WARMUP, MAX),                      # end of warm-up: the peak
    (MID, (MAX + MIN) / 2),             # cos(pi/2) = 0: halfway between max and min
    (DECAY, MIN),                       # end of the decay
    (DECAY + 1, MIN),
    (10 * DECAY, MIN),                  # beyond: the floor
])
def test_cosine_values_at_known_iterations(it, expected):
    assert cosine_with_warmup(it, MAX, MIN, WARMUP, DECAY) == pytest.approx(expected, rel=1e-12)


def test_cosine_quarter_points():
    quarter = WARMUP + (DECAY - WARMUP) // 4          # r = 1/4: coefficient (1 + cos(pi/4)) / 2
    coeff = (1 + math.sqrt(0.5)) / 2
    assert cosine_with_warmup(quarter, MAX, MIN, WARMUP, DECAY) == pytest.approx(
        MIN + coeff * (MAX - MIN), rel=1e-12)


def test_cosine_rises_then_falls():
    lrs = [cosine_with_warmup(it, MAX, MIN, WARMUP, DECAY) for it in range(DECAY + 50)]
    assert all(a < b for a, b in zip(lrs[:WARMUP], lrs[1:WARMUP + 1]))
    assert all(a >= b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1:]))
    assert max(lrs) == MAX and min(lrs[WARMUP:]) == MIN


@pytest.mark.parametrize("it, expected", [
    (0, MAX / (WARMUP + 1)),
    (WARMUP, MAX),
    (MID, (MAX + MIN) / 2),
    (WARMUP + (DECAY - WARMUP) // 4, MAX - 0.25 * (MAX - MIN)),
    (DECAY, MIN),
    (DECAY + 500, MIN),
])
def test_linear_values_at_known_iterations(it, expected):
    assert linear_schedule(it, MAX, MIN, WARMUP, DECAY) == pytest.approx(expected, rel=1e-12)


def test_constant():
    assert constant(0, MAX) == MAX and constant(10 ** 6, MAX) == MAX
    assert constant(0, MAX, warmup_iters=9) == pytest.approx(MAX / 10)
    assert constant(9, MAX, warmup_iters=9) == MAX


def test_no_warmup_starts_at_the_peak():
    assert cosine_with_warmup(0, MAX, MIN, 0, DECAY) == MAX
    assert linear_schedule(0, MAX, MIN, 0, DECAY) == MAX


def test_empty_decay_span_goes_straight_to_the_floor():
    assert cosine_with_warmup(WARMUP, MAX, MIN, WARMUP, WARMUP) == MIN
    assert cosine_with_warmup(WARMUP - 1, MAX, MIN, WARMUP, WARMUP) < MAX


def test_get_schedule_by_name():
    assert sorted(SCHEDULES) == ["constant", "cosine", "linear"]
    for name, fn in SCHEDULES.items():
        schedule = get_schedule(name, MAX, MIN, WARMUP, DECAY)
        for it in (0, WARMUP, MID, DECAY, DECAY + 1):
            assert schedule(it) == fn(it, MAX, MIN, WARMUP, DECAY)
        assert name in repr(schedule)
    assert get_schedule("constant", MAX)(5) == MAX


@pytest.mark.parametrize("args, error, match", [
    (("cosine", MAX, MIN, WARMUP, None), ValueError, "needs lr_decay_iters"),
    (("warmup", MAX, MIN, WARMUP, DECAY), ValueError, "unknown learning-rate schedule"),
    (("cosine", MAX, 2 * MAX, WARMUP, DECAY), ValueError, "min_lr"),
    (("cosine", -MAX, 0.0, WARMUP, DECAY), ValueError, "max_lr"),
    (("cosine", MAX, MIN, WARMUP, WARMUP - 1), ValueError, "lr_decay_iters"),
    (("linear", MAX, MIN, -1, DECAY), ValueError, "warmup_iters"),
])
def test_bad_arguments_raise(args, error, match):
    with pytest.raises(error, match=match):
        get_schedule(*args)


def test_bad_iteration_raises():
    with pytest.raises(ValueError, match="-1"):
        cosine_with_warmup(-1, MAX, MIN, WARMUP, DECAY)
    with pytest.raises(TypeError, match="the iteration must be an int"):
        cosine_with_warmup(1.5, MAX, MIN, WARMUP, DECAY)
