"""gradcheck itself: planted wrong backward passes must make it raise, with a message that
names the input, the index and both values; its cheap checks (zero upstream, two runs
agree) each trigger on an op broken on purpose. The broken ops are Function
subclasses that are never registered, so the op registry stays clean.
"""

import re

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.autograd import Function, GradcheckError, OPS, Tensor, gradcheck, register


class WrongScaleMul(Function):
    """y = a * b with db = dy * a * 1.01: one input's gradient off by 1%."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved
        return dy * b, dy * a * 1.01


class NonzeroForZeroUpstream(Function):
    """y = 2x with dx = 2 dy + 1e-3: right to 1e-3, but not zero for a zero upstream."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, dy):
        return (2 * dy + 1e-3,)


class WritesIntoSaved(Function):
    """y = x^2 whose backward scales its saved input in place (the input's own array): the
    first backward changes x, so the second one disagrees."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        x *= 2
        return (dy * x,)


class TransposedGradient(Function):
    """y = 2x for a (2, 3) x whose backward returns the right values transposed, (3, 2)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, dy):
        return ((2 * dy).T,)


class WrongSoftmax(Function):
    """softmax along the last axis with dx = dy - sum(dy * y), the factor y forgotten: for
    dy = ones both it and the true y * (dy - sum(dy * y)) are 0, so only a random upstream
    gradient tells them apart."""

    @staticmethod
    def forward(ctx, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy - (dy * y).sum(axis=-1, keepdims=True),)


def f64(shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_wrong_backward_raises_naming_input_index_and_both_values():
    a, b = f64((3, 4), 1), f64((3, 4), 2)
    with pytest.raises(GradcheckError) as info:
        gradcheck(WrongScaleMul.apply, [a, b])
    message = str(info.value)
    assert "input 1" in message
    found = re.search(r"index \((\d+), (\d+)\): analytic (\S+), numeric (\S+) ", message)
    assert found, message
    index = (int(found[1]), int(found[2]))
    analytic, numeric = float(found[3].rstrip(",")), float(found[4])
    # The reported values are the planted and the true gradient at that index (for the
    # random upstream gradient u: analytic = 1.01 * numeric, numeric = (u * a)[index]).
    np.testing.assert_allclose(analytic, 1.01 * numeric, rtol=1e-6)
    assert abs(numeric) > 0
    assert 0 <= index[0] < 3 and 0 <= index[1] < 4


def test_correct_twin_of_the_planted_op_passes():
    a, b = f64((3, 4), 1), f64((3, 4), 2)
    assert gradcheck(lambda a, b: a * b, [a, b])


def test_planted_op_is_not_in_the_registry():
    assert WrongScaleMul not in OPS.values()


def test_all_ones_upstream_would_miss_a_wrong_softmax_but_gradcheck_does_not():
    x = f64((3, 5))
    WrongSoftmax.apply(x).sum().backward()  # all-ones upstream: the true gradient is 0
    np.testing.assert_allclose(x.grad.numpy(), 0.0, atol=1e-15)
    x.grad = None
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(WrongSoftmax.apply, [x])


def test_zero_upstream_check_triggers():
    with pytest.raises(GradcheckError, match="zero upstream"):
        gradcheck(NonzeroForZeroUpstream.apply, [f64((2, 3))])


def test_two_runs_agree_check_triggers():
    with pytest.raises(GradcheckError, match="two backward passes disagree"):
        gradcheck(WritesIntoSaved.apply, [f64((2, 3))])


def test_gradient_in_the_wrong_layout_is_caught():
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(TransposedGradient.apply, [f64((2, 3))])


def test_float32_inputs_are_refused():
    x = tg.randn(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match="float32"):
        gradcheck(lambda x: x * 2.0, [x])


def test_overlapping_memory_is_refused():
    x = Tensor(np.broadcast_to(np.ones(3), (4, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="overlapping memory"):
        gradcheck(lambda x: x * 2.0, [x])


def test_no_input_requiring_grad_is_an_error():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda x: x * 2.0, [Tensor(np.ones(3))])


def test_integer_inputs_are_passed_through():
    w, idx = f64((5, 3)), tg.tensor([0, 4, 4, 1])
    assert gradcheck(lambda w, idx: w[idx].tanh(), [w, idx])


def test_several_outputs_are_checked_together():
    x = f64((2, 3))
    assert gradcheck(lambda x: (x.exp(), x.sum(dim=0)), [x])
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: (x.exp(), WrongScaleMul.apply(x, x * 1.0)), [x])


def test_raise_exception_false_returns_false():
    assert gradcheck(WrongScaleMul.apply, [f64((2,)), f64((2,), 1)],
                     raise_exception=False) is False


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register("add")(WrongScaleMul)
    assert OPS["add"] is not WrongScaleMul
