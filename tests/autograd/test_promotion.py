"""Binary ops promote dtypes as PyTorch does, not as NumPy 2 does: across categories (bool,
integer, floating) the higher category's dtype wins, within one a dimensioned tensor's wins
over a 0-d one's, and integers divide as float32. Gradients flow through the casts back to
each input in its own dtype."""

import numpy as np
import pytest

import tinygpt as tg

# (left, right, op, the dtype PyTorch gives); shapes: "v" a vector, "s" a 0-d tensor
CASES = [
    (("int64", "v"), ("float32", "v"), "+", "float32"),     # NumPy: float64
    (("float32", "v"), ("int64", "v"), "*", "float32"),
    (("int32", "v"), ("float64", "v"), "-", "float64"),
    (("bool", "v"), ("float32", "v"), "+", "float32"),
    (("bool", "v"), ("int64", "v"), "+", "int64"),
    (("float32", "v"), ("float64", "s"), "+", "float32"),   # NumPy: float64
    (("float64", "s"), ("float32", "v"), "*", "float32"),
    (("float32", "v"), ("float64", "v"), "+", "float64"),
    (("int64", "v"), ("float64", "s"), "*", "float64"),     # a 0-d float of a higher category
    (("int32", "v"), ("int64", "v"), "+", "int64"),
    (("int64", "v"), ("int64", "v"), "/", "float32"),       # NumPy: float64
    (("float16", "v"), ("int64", "v"), "*", "float16"),
]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: a / b}


def make(dtype, shape):
    values = [1, 0, 1] if dtype == "bool" else [1, 2, 3]
    return tg.tensor(values if shape == "v" else values[0], dtype=dtype)


@pytest.mark.parametrize("left, right, op, expected", CASES)
def test_binary_ops_promote_as_pytorch(left, right, op, expected):
    assert OPS[op](make(*left), make(*right)).dtype == np.dtype(expected)


@pytest.mark.parametrize("left, right, op, expected", CASES)
def test_the_table_is_pytorchs(left, right, op, expected):
    torch = pytest.importorskip("torch")

    def make_torch(dtype, shape):
        return torch.from_numpy(make(dtype, shape).numpy())
    got = OPS[op](make_torch(*left), make_torch(*right)).dtype
    assert str(got) == f"torch.{expected}"


def test_python_scalars_keep_the_tensors_float_dtype():
    x = tg.tensor([1.0, 2.0])
    assert (x * 2.5).dtype == tg.float32 and (2.5 * x).dtype == tg.float32
    assert (tg.tensor([1, 2]) * 2.5).dtype == tg.float32
    assert (tg.tensor([1, 2]) + 1).dtype == tg.int64


def test_gradients_flow_through_the_promotion_in_each_inputs_dtype():
    w = tg.tensor(2.0, dtype="float64", requires_grad=True)     # 0-d float64
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)          # float32
    y = x * w
    assert y.dtype == tg.float32
    y.sum().backward()
    assert w.grad.dtype == tg.float64 and x.grad.dtype == tg.float32
    assert w.grad.item() == 6.0 and x.grad.numpy().tolist() == [2.0, 2.0, 2.0]
