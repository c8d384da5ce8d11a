"""The tensor factories: `tensor`, `zeros`, `ones`, `full`, `*_like`, `randn`, `rand`,
`randint`, `arange`, `cat`, `stack`, `where`, and `manual_seed` (floor 2). Imports: numpy,
backend, tensor, dtypes, shapes, ops.
"""

import numpy as np

from . import backend
from .dtypes import bool_, dtype_of, int64, lift
from .ops.elementwise import WhereOp
from .ops.shape import CatOp, StackOp
from .shapes import axis_index, shape_arg
from .tensor import Tensor


def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """A new tensor holding a copy of `data` (a list, scalar, NumPy array or Tensor).

    Python floats become float32 (the default), ints int64 and bools bool; NumPy arrays
    keep their dtype unless `dtype` is given.
    """
    device = backend.normalize_device(device)
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.array_module_for_device(device)
    if dtype is None and not hasattr(data, "dtype"):
        array = np.asarray(data)
        if array.dtype.kind == "f":
            dtype = backend.DEFAULT_FLOAT
        elif array.dtype.kind in "OUS":
            raise TypeError(f"tensor: cannot make a tensor from data of dtype {array.dtype}")
    if device == "cpu" and not isinstance(data, np.ndarray) and hasattr(data, "get"):
        data = data.get()  # CuPy array to the CPU
    array = xp.array(data, dtype=dtype_of(dtype))
    return Tensor(array, requires_grad=requires_grad)


def _filled(fill, shape, dtype, device, requires_grad):
    device = backend.normalize_device(device)
    xp = backend.array_module_for_device(device)
    dtype = dtype_of(dtype) or backend.DEFAULT_FLOAT
    shape = shape_arg(shape)
    return Tensor(getattr(xp, fill)(shape, dtype=dtype), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    return _filled("zeros", shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    return _filled("ones", shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device="cpu", requires_grad=False):
    t = zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)
    t.data[...] = fill_value
    return t


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn(*shape, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from the device's generator (seeded by `manual_seed`)."""
    device = backend.normalize_device(device)
    dtype = dtype_of(dtype) or backend.DEFAULT_FLOAT
    data = backend.generator(device).standard_normal(shape_arg(shape), dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False):
    """Uniform samples in [0, 1) from the device's generator."""
    device = backend.normalize_device(device)
    dtype = dtype_of(dtype) or backend.DEFAULT_FLOAT
    data = backend.generator(device).random(shape_arg(shape), dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def randint(low, high, size, dtype=None, device="cpu"):
    """Integers uniform in [low, high)."""
    device = backend.normalize_device(device)
    data = backend.generator(device).integers(low, high, size=shape_arg((size,)))
    return Tensor(data.astype(dtype_of(dtype) or int64, copy=False))


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """Evenly spaced values in [start, end): int64 for integer arguments, else float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = int64 if is_int else backend.DEFAULT_FLOAT
    xp = backend.array_module_for_device(backend.normalize_device(device))
    return Tensor(xp.arange(start, end, step, dtype=np.dtype(dtype)), requires_grad=requires_grad)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension; the other dimensions must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    axis = axis_index(dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise ValueError(
                f"cat: shapes {tuple(tensors[0].shape)} and {tuple(t.shape)} differ outside "
                f"dimension {dim}")
    return CatOp.apply(*tensors, axis=axis)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: expected tensors of one shape, got {tuple(tensors[0].shape)} and "
                f"{tuple(t.shape)}")
    axis = axis_index(dim, tensors[0].ndim + 1)
    return StackOp.apply(*tensors, axis=axis)


def where(condition, input, other):
    """`input` where `condition` is True, else `other` (scalars allowed; broadcasting)."""
    condition = condition if isinstance(condition, Tensor) else Tensor(condition)
    if condition.dtype != bool_:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {condition.dtype}")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = Tensor(backend.array_module(condition.data).asarray(
            input, dtype=backend.DEFAULT_FLOAT if isinstance(input, float) else None))
    if not isinstance(input, Tensor):
        input = lift(other, input)
    other = lift(input, other)
    return WhereOp.apply(condition, input, other)


def manual_seed(seed):
    """Seed every random generator tinygpt uses (randn, dropout, sampling, batches)."""
    backend.manual_seed(seed)
