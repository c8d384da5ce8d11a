"""The dtypes of tensors and PyTorch's promotion rules for binary operators (floor 2).

`operands(a, b)` puts the two operands of a binary op in one dtype as PyTorch does, not as
NumPy 2 does: across categories (bool < integer < floating) the higher category's dtype
wins (int64 + float32 is float32), a dimensioned tensor's dtype wins over a 0-d one's of
its category (float32 + a 0-d float64 is float32), and integers divide as float32
(`floating_operands`). Imports: numpy, backend, tensor.
"""

import numpy as np

from . import backend
from .tensor import Tensor  # tensor.py imports this module after defining Tensor

float16, float32, float64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
int32, int64 = np.dtype(np.int32), np.dtype(np.int64)
uint8, bool_ = np.dtype(np.uint8), np.dtype(bool)


CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def promoted(a, b, a_is_0d, b_is_0d):
    """The dtype of a binary op on dtypes a and b (see `operands`)."""
    ca, cb = CATEGORY.get(a.kind, 2), CATEGORY.get(b.kind, 2)
    if ca != cb:
        return a if ca > cb else b
    if a_is_0d != b_is_0d:
        return b if a_is_0d else a
    return np.promote_types(a, b)


def floating_operands(a, b):
    """Operands of true division: integers and booleans divide as the default float dtype
    (PyTorch's `1 / 2` on int tensors is 0.5 in float32)."""
    if a.dtype.kind in "biu":
        return a.to(backend.DEFAULT_FLOAT), b.to(backend.DEFAULT_FLOAT)
    return a, b


def dtype_of(dtype):
    return None if dtype is None else np.dtype(dtype)


def lift(tensor, other):
    """Wrap a Python/NumPy scalar or array as a constant tensor.

    A Python float takes this tensor's float dtype, so float32 stays float32 (NumPy 2
    would promote to float64 through a NumPy float64 scalar).
    """
    if isinstance(other, Tensor):
        return other
    xp = backend.array_module(tensor.data)
    if tensor.dtype.kind == "f":
        dtype = tensor.dtype
    elif isinstance(other, float):
        dtype = backend.DEFAULT_FLOAT
    else:
        dtype = None
    return Tensor(xp.asarray(other, dtype=dtype))


def operands(tensor, other):
    """(tensor, other) as the operands of a binary op, in one dtype by PyTorch's rules:
    across categories (bool < integer < floating) the higher category's dtype wins
    (int64 + float32 is float32, where NumPy gives float64); within one, a dimensioned
    tensor's dtype wins over a 0-d one's (float32 + a 0-d float64 is float32), and
    otherwise the wider dtype (float32 + float64 is float64)."""
    other = lift(tensor, other)
    a, b = tensor.dtype, other.dtype
    if a == b:
        return tensor, other
    target = promoted(a, b, tensor.ndim == 0, other.ndim == 0)
    return (tensor if a == target else tensor.to(target),
            other if b == target else other.to(target))
