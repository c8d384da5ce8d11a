"""examples/adder.py: minGPT's sequence layout for addition, a held-out set never trained
on, and a short run that learns to add far better than chance."""

import importlib
import re

import numpy as np
import pytest

from conftest import REPO


@pytest.fixture
def adder(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))   # where the script's imports live
    return importlib.import_module("adder")


def test_a_problem_is_its_operands_then_the_sum_reversed(adder):
    # 85 + 50 = 135 is 85 50 531; 6 + 39 = 045 is 06 39 540 (every number zero-padded).
    assert adder.encode(np.array([85_50, 6_39]), 2).tolist() == [[8, 5, 5, 0, 5, 3, 1],
                                                                 [0, 6, 3, 9, 5, 4, 0]]
    assert adder.encode(np.array([999_999]), 3).tolist() == [[9, 9, 9, 9, 9, 9, 8, 9, 9, 1]]
    assert adder.decode(np.array([[1, 3, 5], [0, 4, 5]])).tolist() == [135, 45]


def test_the_loss_sees_the_sum_digits_only(adder):
    from digit_tasks import inputs_and_targets
    inputs, targets = inputs_and_targets(adder.encode(np.array([6_39]), 2), prompt_length=4)
    # The position of the last operand digit predicts the sum's first digit, and so on.
    assert inputs.tolist() == [[0, 6, 3, 9, 5, 4]]
    assert targets.tolist() == [[-1, -1, -1, 5, 4, 0]]


def test_held_out_problems_are_never_training_problems(adder):
    from digit_tasks import split_problems
    train, test = split_problems(100 ** 2, 500)
    assert len(test) == 500 and len(train) == 9500
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(100 ** 2))
    import tinygpt as tg
    tg.manual_seed(7)                                       # what --seed 7 would do
    again_train, again_test = split_problems(100 ** 2, 500)
    assert (again_test == test).all() and (again_train == train).all()


def test_a_short_run_learns_to_add(adder, capsys):
    # 800 steps (two fifths of the default run, ~7 s): about 80% of held-out answers exact on
    # this machine; guessing a 3-digit sum is right about once in a few hundred tries.
    result = adder.main(["--iters", "800", "--eval_every", "400", "--eval_train", "100"])
    out = capsys.readouterr().out
    assert result["test_accuracy"] >= 0.3, out
    assert re.search(r"held-out problems solved: \d+/500 = [\d.]+%", out)
    assert len(re.findall(r"GPT: \d+ \+ \d+ = \d+", out)) >= 5    # a few answers shown


def test_more_than_three_digits_is_refused(adder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        adder.main(["--ndigit", "4"])
    assert exit_info.value.code == 2
    assert "--ndigit must be 1, 2 or 3, got 4" in capsys.readouterr().err
