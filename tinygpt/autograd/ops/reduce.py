"""Reductions: sum, mean, max (floor 2).

`axis` is None (all elements) or a tuple of non-negative axes; `keepdims` as NumPy.
Backward broadcasts dy back over the reduced axes: re-insert them as size-1 axes when
they were dropped, then broadcast to the input's shape.
"""

from .. import backend
from ..function import Function, register


def _expand(dy, shape, axis, keepdims):
    """dy with the reduced axes re-inserted (size 1), ready to broadcast to `shape`."""
    if axis is None:
        return dy.reshape((1,) * len(shape))
    if not keepdims:
        dy = backend.array_module(dy).expand_dims(dy, axis)
    return dy


@register("sum")
class SumOp(Function):
    """y = sum of x over `axis`;  dx = dy broadcast back to x's shape (saves the shape only)."""

    @staticmethod
    def forward(ctx, x, axis, keepdims):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, dy):
        xp = backend.array_module(dy)
        return (xp.broadcast_to(_expand(dy, ctx.shape, ctx.axis, ctx.keepdims), ctx.shape),)


@register("mean")
class MeanOp(Function):
    """y = mean of x over `axis` (n elements each);  dx = dy / n broadcast back."""

    @staticmethod
    def forward(ctx, x, axis, keepdims):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        y = x.mean(axis=axis, keepdims=keepdims)
        ctx.n = x.size // y.size if y.size else 1
        return y

    @staticmethod
    def backward(ctx, dy):
        xp = backend.array_module(dy)
        dx = _expand(dy, ctx.shape, ctx.axis, ctx.keepdims) / dy.dtype.type(ctx.n)
        return (xp.broadcast_to(dx, ctx.shape),)


@register("max")
class MaxOp(Function):
    """y = max of x over `axis`.

    Ties: over all elements (axis None) the gradient is split evenly among the tied
    maxima, dx = dy * (x == y) / count, as PyTorch's `max()`; along one axis it all goes
    to the first maximum (the index `argmax` returns), as PyTorch's `max(dim)`.
    """

    @staticmethod
    def forward(ctx, x, axis, keepdims):
        xp = backend.array_module(x)
        if x.size == 0:
            raise ValueError(f"max of an empty tensor of shape {x.shape} is undefined")
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        if axis is None:
            y = x.max()
            ctx.save(x == y)
            return xp.asarray(y)
        (ax,) = axis if isinstance(axis, tuple) else (axis,)
        ctx.axis = ax
        index = xp.expand_dims(xp.argmax(x, axis=ax), ax)
        ctx.save(index)
        y = xp.take_along_axis(x, index, axis=ax)
        return y if keepdims else y.squeeze(ax)

    @staticmethod
    def backward(ctx, dy):
        xp = backend.array_module(dy)
        if ctx.axis is None:
            (is_max,) = ctx.saved
            return (is_max * (dy / is_max.sum().astype(dy.dtype)),)
        (index,) = ctx.saved
        dx = xp.zeros(ctx.shape, dtype=dy.dtype)
        dy = dy if ctx.keepdims else xp.expand_dims(dy, ctx.axis)
        xp.put_along_axis(dx, index, dy, axis=ctx.axis)
        return (dx,)
