"""Every registered op is gradient-checked, on its reference and on its fast kernel: the
registry test, Hypothesis-drawn shapes (0-d, size-1 axes, broadcasting pairs, batched
matmul with 1-D operands), unbroadcast against an explicit sum, float32 in -> float32 out
for every op, and the documented kinks.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import tinygpt as tg
import tinygpt.nn  # noqa: F401  (so that an op registered anywhere in the package is listed)
from tinygpt.autograd import KERNELS, OPS, Tensor, gradcheck
from tinygpt.autograd.checks import (CASES, GRADCHECK_OPTIONS, RANDOM_CASES, inputs_on,
                                     missing_cases, run_check)
from tinygpt.autograd.ops.elementwise import unbroadcast

SEEDS = st.integers(0, 2**32 - 1)
SMALL_SHAPES = array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
BROADCAST_PAIRS = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=1, max_side=4)
MATMUL_PAIRS = mutually_broadcastable_shapes(signature=np.matmul.signature,
                                             min_dims=0, max_dims=2, min_side=1, max_side=3)


# --- the registry -------------------------------------------------------------------------
# Every op's case on its reference; an op with a fast kernel on the CPU, on that kernel too.
IMPLEMENTATIONS = [(name, impl) for name in sorted(OPS)
                   for impl in (("reference", "fast") if KERNELS[name].get("cpu")
                                else ("reference",))]


@pytest.mark.parametrize("name, impl", IMPLEMENTATIONS)
def test_every_registered_op_passes_its_gradient_check(name, impl):
    assert name in CASES, f"op {name!r} is registered but has no case in autograd/checks.py"
    with tg.use_reference_ops(impl == "reference"):
        report = run_check(name, np.random.default_rng(0))
    assert report["passed"], report["error"]
    assert report["error"] is None
    assert report["max_rel_err"] < 1e-4, report


def test_no_op_lacks_a_case_and_no_case_lacks_an_op():
    assert missing_cases() == []
    assert sorted(set(CASES) - set(OPS)) == []


def test_run_check_reports_a_failure_instead_of_raising(monkeypatch):
    def broken_case(rng, shapes=None):
        x = Tensor(rng.standard_normal((2, 2)), requires_grad=True)
        return (lambda x: x.reshape(5)), [x]
    monkeypatch.setitem(CASES, "reshape", broken_case)
    report = run_check("reshape", np.random.default_rng(0))
    assert report["passed"] is False
    assert "ValueError" in report["error"] and "(2, 2)" in report["error"]
    with pytest.raises(KeyError, match="no_such_op"):
        run_check("no_such_op", np.random.default_rng(0))


# --- Hypothesis: shapes and values ----------------------------------------------------------
def check_case(name, seed, shapes):
    fn, inputs = CASES[name](np.random.default_rng(seed), shapes=shapes)
    assert gradcheck(fn, inputs, **GRADCHECK_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "where"])
@given(shapes=BROADCAST_PAIRS, seed=SEEDS)
def test_binary_ops_with_broadcast_shapes(name, shapes, seed):
    check_case(name, seed, shapes.input_shapes)


@given(shapes=BROADCAST_PAIRS, seed=SEEDS)
def test_masked_fill_with_a_broadcast_mask(shapes, seed):
    check_case("masked_fill", seed, (shapes.result_shape, shapes.input_shapes[1]))


@given(data=st.data(), seed=SEEDS)
def test_where_with_a_broadcast_condition(data, seed):
    three = data.draw(mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    check_case("where", seed, three.input_shapes)


@pytest.mark.parametrize("name", ["neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs",
                                  "clone", "cast", "to_device", "sum", "mean", "max", "reshape",
                                  "expand"])
@given(shape=SMALL_SHAPES, seed=SEEDS)
def test_unary_ops_and_reductions_on_any_shape(name, shape, seed):
    check_case(name, seed, (shape,))


@pytest.mark.parametrize("name", ["transpose", "permute", "softmax", "log_softmax", "dropout",
                                  "gelu"])
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), seed=SEEDS)
def test_ops_that_need_an_axis_on_any_shape(name, shape, seed):
    check_case(name, seed, (shape,))


@given(shapes=MATMUL_PAIRS, seed=SEEDS)
def test_matmul_with_batched_and_one_dimensional_operands(shapes, seed):
    shape_a, shape_b = shapes.input_shapes
    check_case("matmul", seed, (shape_a, shape_b))
    fn, inputs = CASES["matmul"](np.random.default_rng(seed), shapes=(shape_a, shape_b))
    a, b = inputs
    np.testing.assert_allclose(fn(a, b).numpy(), np.matmul(a.numpy(), b.numpy()), rtol=1e-12)


@given(shape=st.sampled_from([(1, 3), (3, 1), (1, 1)]), seed=SEEDS)
def test_matmul_with_size_one_matrices(shape, seed):
    m, n = shape
    check_case("matmul", seed, ((2, m, 3), (3, n)))


ZERO_D_CALLS = {
    "gelu tanh": lambda x: tg.autograd.ops.fused.GeluOp.apply(x, approximate="tanh"),
    "softmax(0)": lambda x: x.softmax(0),
    "sum(dim=(0,))": lambda x: x.sum(dim=(0,)),
    "max(dim=0)": lambda x: x.max(dim=0).values,
    "transpose(0, 0)": lambda x: x.transpose(0, 0),
}


@pytest.mark.parametrize("call", sorted(ZERO_D_CALLS))
def test_zero_dimensional_input_where_pytorch_accepts_it(call):
    x = tg.tensor(0.3, dtype=tg.float64, requires_grad=True)
    assert gradcheck(ZERO_D_CALLS[call], [x])


def test_non_contiguous_inputs():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)).T, requires_grad=True)   # a transposed view
    w = Tensor(rng.standard_normal((5, 4))[::2], requires_grad=True)  # a strided view
    assert not x.data.flags.c_contiguous and not w.data.flags.c_contiguous
    assert gradcheck(lambda x, w: (x @ w.T).tanh() * x.sum(), [x, w])


# --- unbroadcast ----------------------------------------------------------------------------
def explicit_sum_to(grad, shape):
    """Each element of `shape` gets the sum of the grad elements it was broadcast to."""
    out = np.zeros(shape)
    lead = grad.ndim - len(shape)
    for index in np.ndindex(*grad.shape):
        target = tuple(0 if n == 1 else i for i, n in zip(index[lead:], shape))
        out[target] += grad[index]
    return out


@given(shapes=BROADCAST_PAIRS, seed=SEEDS)
def test_unbroadcast_equals_an_explicit_sum(shapes, seed):
    grad = np.random.default_rng(seed).standard_normal(shapes.result_shape)
    for shape in shapes.input_shapes:
        reduced = unbroadcast(grad, shape)
        assert reduced.shape == shape
        np.testing.assert_allclose(reduced, explicit_sum_to(grad, shape), rtol=1e-12, atol=1e-12)


def test_unbroadcast_returns_the_same_array_when_shapes_match():
    grad = np.ones((2, 3))
    assert unbroadcast(grad, (2, 3)) is grad


# --- dtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_in_gives_float32_out_and_float32_gradients(name):
    fn, inputs = CASES[name](np.random.default_rng(0))
    inputs = inputs_on(inputs, dtype=np.float32)
    outs = fn(*inputs)
    outs = (outs,) if isinstance(outs, Tensor) else outs
    for y in outs:
        assert y.dtype == np.float32, f"{name}: output dtype {y.dtype} from float32 inputs"
    total = sum((y * Tensor(np.full(y.shape, 0.5, dtype=np.float32))).sum() for y in outs)
    total.backward()
    for i, t in enumerate(inputs):
        if t.requires_grad:
            assert t.grad is not None, f"{name}: input {i} got no gradient"
            assert t.grad.dtype == np.float32, f"{name}: input {i} got a {t.grad.dtype} gradient"


@pytest.mark.parametrize("name", sorted(set(CASES) - RANDOM_CASES))
def test_float32_values_match_float64(name):
    # (Random cases are left out: the dropout mask is drawn in the data's dtype.)
    fn, inputs = CASES[name](np.random.default_rng(1))
    outs64 = fn(*inputs)
    outs32 = fn(*inputs_on(inputs, dtype=np.float32))
    outs64 = (outs64,) if isinstance(outs64, Tensor) else outs64
    outs32 = (outs32,) if isinstance(outs32, Tensor) else outs32
    for y32, y64 in zip(outs32, outs64):
        np.testing.assert_allclose(y32.numpy(), y64.numpy(), rtol=1e-5, atol=1e-5)


# --- kinks and ties -------------------------------------------------------------------------
def test_full_max_splits_the_gradient_evenly_among_ties():
    x = tg.tensor([1.0, 3.0, 3.0, 2.0, 3.0], dtype=tg.float64, requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1 / 3, 1 / 3, 0, 1 / 3])


def test_max_along_a_dim_gives_the_gradient_to_the_first_maximum():
    x = tg.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    (values * tg.tensor([2.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 2, 0], [5, 0, 0]])


@pytest.mark.parametrize("keepdim", [False, True])
def test_max_along_a_dim_matches_numpy(keepdim):
    x = tg.tensor(np.random.default_rng(0).standard_normal((3, 4, 5)))
    for dim in range(-3, 3):
        values, indices = x.max(dim=dim, keepdim=keepdim)
        np.testing.assert_array_equal(values.numpy(), x.numpy().max(axis=dim, keepdims=keepdim))
        np.testing.assert_array_equal(indices.numpy(),
                                      x.numpy().argmax(axis=dim, keepdims=keepdim))


def test_relu_and_abs_have_zero_derivative_at_zero():
    for method in ("relu", "abs"):
        x = tg.tensor([0.0, 1.5, -1.5], requires_grad=True)
        getattr(x, method)().sum().backward()
        expected = [0.0, 1.0, 0.0] if method == "relu" else [0.0, 1.0, -1.0]
        np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_repeated_integer_index_accumulates():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[tg.tensor([0, 2, 2, 2, -3])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 3])


def test_split_and_chunk_give_back_the_pieces_and_their_gradients():
    x = tg.tensor(np.arange(10.0), requires_grad=True)
    pieces = x.split([3, 3, 4])
    assert [p.shape for p in pieces] == [(3,), (3,), (4,)]
    (pieces[0].sum() * 1.0 + pieces[2].sum() * 2.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1, 0, 0, 0, 2, 2, 2, 2])
    assert [c.shape for c in tg.tensor(np.zeros((7, 2))).chunk(3)] == [(3, 2), (3, 2), (1, 2)]


@pytest.mark.parametrize("name,method", [("sum", "sum"), ("mean", "mean")])
def test_reductions_match_numpy_for_every_axis_combination(name, method):
    data = np.random.default_rng(0).standard_normal((2, 3, 4))
    x = tg.tensor(data, dtype=tg.float64)
    for r in range(1, 4):
        for dims in itertools.combinations(range(3), r):
            for keepdim in (False, True):
                got = getattr(x, method)(dim=dims, keepdim=keepdim).numpy()
                np.testing.assert_allclose(got, getattr(data, method)(axis=dims, keepdims=keepdim),
                                           rtol=1e-12)
