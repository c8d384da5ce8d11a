"""`python -m tinygpt gradcheck`: the table and the exit status, on good and broken ops."""

import numpy as np

from tinygpt.autograd import OPS, Function
from tinygpt.cli import main
from tinygpt.cli.gradcheck import check_ops


class SquareWrongBackward(Function):
    """y = x^2;  dx = dy * x  (wrong on purpose: the derivative is 2 x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        return (dy * x,)


class SquareRight(SquareWrongBackward):
    """y = x^2;  dx = 2 dy x."""

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        return (2 * dy * x,)


def square_case(cls):
    from tinygpt.autograd.checks import normal

    def case(rng, shapes=None):
        return (lambda x: cls.apply(x)), [normal(rng, (3, 2))]
    return case


def rows(output):
    """The table's rows: op name -> the row's fields."""
    lines = output.split("\n\n")[0].splitlines()[1:]      # after the title, before notes
    header, body = lines[0], lines[1:]
    assert header.split()[:3] == ["op", "input", "shapes"]
    return {line.split()[0]: line.split() for line in body}


def test_passing_ops_exit_0(capsys):
    assert main(["gradcheck", "--ops", "mul,softmax,layer_norm", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert set(table) == {"mul", "softmax", "layer_norm"}
    assert all(fields[-1] == "pass" for fields in table.values())
    assert table["softmax"][1] == "(3,4)"
    assert "seed 1" in out and "3 passed, 0 failed" in out


def test_broken_op_exits_1(capsys, throwaway_ops):
    throwaway_ops("broken_square", SquareWrongBackward, square_case(SquareWrongBackward))
    assert main(["gradcheck", "--ops", "add,broken_square", "--seed", "0"]) == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["add"][-1] == "pass"
    assert table["broken_square"][-1] == "FAIL"
    # The errors of dy * x against 2 dy x are of the order of the gradient itself.
    assert float(table["broken_square"][3]) > 0.1
    assert "broken_square:" in out and "reproduce with --seed 0" in out


def test_fixed_op_exits_0(capsys, throwaway_ops):
    throwaway_ops("good_square", SquareRight, square_case(SquareRight))
    assert main(["gradcheck", "--ops", "good_square"]) == 0
    assert rows(capsys.readouterr().out)["good_square"][-1] == "pass"


def test_registered_op_without_a_case_fails(capsys, throwaway_ops):
    throwaway_ops("uncovered_square", SquareRight)
    assert main(["gradcheck", "--ops", "uncovered_square,exp"]) == 1
    out = capsys.readouterr().out
    assert " ".join(rows(out)["uncovered_square"][-3:]) == "no gradient check"
    assert "uncovered_square: no gradient check" in out


def test_every_registered_op_passes(capsys):
    assert main(["gradcheck", "--seed", "0"]) == 0
    table = rows(capsys.readouterr().out)
    assert set(table) == set(OPS)


def test_unknown_op_or_device_exits_2(capsys):
    assert main(["gradcheck", "--ops", "add,no_such_op"]) == 2
    assert "'no_such_op'" in capsys.readouterr().err
    assert main(["gradcheck", "--ops", "add", "--device", "tpu"]) == 2
    assert "tpu" in capsys.readouterr().err


def test_an_op_gets_the_same_inputs_alone_or_with_others():
    alone = check_ops(["tanh"], seed=7)[0]
    together = check_ops(["exp", "tanh"], seed=7)[1]
    assert alone["max_abs_err"] == together["max_abs_err"]
    other_seed = check_ops(["tanh"], seed=8)[0]
    assert other_seed["max_abs_err"] != alone["max_abs_err"]
    assert np.isfinite(alone["max_rel_err"])
