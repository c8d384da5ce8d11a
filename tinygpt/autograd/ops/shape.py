"""Ops that move elements without arithmetic: reshape, transpose, permute, expand,
indexing, cat, stack (floor 2). Each backward moves dy back the same way.
"""

from .. import backend
from ..function import Function, register
from .elementwise import unbroadcast


@register("reshape")
class ReshapeOp(Function):
    """y = x viewed with a new shape;  dx = dy reshaped to x's shape."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        return (dy.reshape(ctx.shape),)


@register("transpose")
class TransposeOp(Function):
    """y = x with axes dim0 and dim1 swapped;  dx = dy with them swapped back."""

    @staticmethod
    def forward(ctx, x, dim0, dim1):
        ctx.dims = dim0, dim1
        return x.swapaxes(dim0, dim1)

    @staticmethod
    def backward(ctx, dy):
        return (dy.swapaxes(*ctx.dims),)


@register("permute")
class PermuteOp(Function):
    """y = x.transpose(axes);  dx = dy.transpose(inverse permutation of axes)."""

    @staticmethod
    def forward(ctx, x, axes):
        ctx.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, dy):
        return (dy.transpose(ctx.inverse),)


@register("expand")
class ExpandOp(Function):
    """y = x broadcast to `shape` (a view);  dx = dy summed back to x's shape."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return backend.array_module(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {x.shape} to {shape}") from None

    @staticmethod
    def backward(ctx, dy):
        return (unbroadcast(dy, ctx.shape),)


def _is_advanced(index):
    """True when the index holds an integer or boolean array (NumPy's advanced indexing)."""
    return any(hasattr(i, "ndim") and (i.ndim > 0 or i.dtype.kind == "b") for i in index)


@register("getitem")
class IndexOp(Function):
    """y = x[index];  dx = zeros like x, then dx[index] += dy.

    With integer-array indices the same element may be picked more than once; its
    gradient is then the sum of all picks, so backward scatter-adds instead of
    assigning (assignment would keep only the last pick).
    """

    @staticmethod
    def forward(ctx, x, index):
        advanced = _is_advanced(index)
        if advanced:
            _check_bounds(x.shape, index)
        ctx.shape, ctx.index, ctx.advanced = x.shape, index, advanced
        return x[index]

    @staticmethod
    def backward(ctx, dy):
        xp = backend.array_module(dy)
        dx = xp.zeros(ctx.shape, dtype=dy.dtype)
        if ctx.advanced:
            backend.scatter_add(dx, ctx.index, dy)
        else:
            dx[ctx.index] = dy
        return (dx,)


def _check_bounds(shape, index):
    """Name the offending index and the valid range (CuPy would wrap around silently).

    Indices with None, Ellipsis or boolean masks are left to the array module's own checks.
    """
    if any(i is None or i is Ellipsis or getattr(i, "dtype", None) == bool for i in index):
        return
    for axis, i in enumerate(index):
        if hasattr(i, "dtype") and i.dtype.kind in "iu" and i.size and axis < len(shape):
            low, high, n = int(i.min()), int(i.max()), shape[axis]
            bad = high if high >= n else low if low < -n else None
            if bad is not None:
                raise IndexError(
                    f"index {bad} is out of range for dimension {axis} of size {n} "
                    f"(valid range [{-n}, {n - 1}])")


@register("cat")
class CatOp(Function):
    """y = the inputs joined along `axis`;  dx_i = the slice of dy that input i filled."""

    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return backend.array_module(arrays[0]).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, dy):
        grads, start = [], 0
        for size, need in zip(ctx.sizes, ctx.needs_grad):
            index = (slice(None),) * ctx.axis + (slice(start, start + size),)
            grads.append(dy[index] if need else None)
            start += size
        return tuple(grads)


@register("stack")
class StackOp(Function):
    """y = the inputs stacked along a new `axis`;  dx_i = dy taken at position i of `axis`."""

    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        return backend.array_module(arrays[0]).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, dy):
        return tuple(dy.take(i, axis=ctx.axis) if need else None
                     for i, need in enumerate(ctx.needs_grad))
