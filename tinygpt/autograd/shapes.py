"""The dimension, shape and index arguments of Tensor methods, checked and normalised
(floor 2): a dimension out of range or a float index is named with what was expected.
Imports: numpy, backend, validate, tensor.
"""

import numpy as np

from .. import validate
from . import backend
from .tensor import Tensor  # tensor.py imports this module after defining Tensor


def axis_index(dim, ndim):
    """A dimension index in [-ndim, ndim) as a non-negative int, or a clear IndexError."""
    dim = validate.integer("dim", dim)
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(
            f"dimension {dim} out of range for a tensor of {ndim} dimensions "
            f"(expected in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])")
    return int(dim) % max(ndim, 1)


def axes_of(dim, ndim):
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        axes = tuple(axis_index(d, ndim) for d in dim)
    else:
        axes = (axis_index(dim, ndim),)
    # A 0-d tensor accepts dim 0 / -1 (as PyTorch) and has nothing to reduce over.
    return axes if ndim else None


def shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def resolve_shape(shape, old):
    """Replace a single -1 by the size that keeps the element count; check the count."""
    size = int(np.prod(old))
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got shape {shape}")
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1]))
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {old} into {shape}")
        shape = tuple(size // known if n == -1 else n for n in shape)
    if int(np.prod(shape)) != size:
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {old} ({size} elements) into {shape}")
    return tuple(int(n) for n in shape)


def normalize_index(index, tensor):
    """Turn Tensor indices into arrays and reject float indices with a clear error."""
    if not isinstance(index, tuple):
        index = (index,)
    out = []
    for i in index:
        if isinstance(i, Tensor):
            if i.device != tensor.device:
                raise RuntimeError(
                    f"indexing a tensor on {tensor.device!r} with an index on {i.device!r}")
            i = i.data
        elif isinstance(i, list):
            i = np.asarray(i)
            if tensor.device != "cpu":
                i = backend.to_device(i, tensor.device)
        if hasattr(i, "dtype") and i.dtype.kind not in "iub":
            raise IndexError(
                f"tensors used as indices must be integer or boolean, got dtype {i.dtype}")
        if isinstance(i, float):
            raise IndexError(
                f"index {i!r} is a float: expected an int, a slice or an integer tensor")
        out.append(i)
    return tuple(out)
