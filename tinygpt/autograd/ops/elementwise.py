"""Elementwise ops: arithmetic, unary math, masked_fill, where, dtype/device moves (floor 2).

Notation (engine.py): `dy` is dL/dy coming in; each backward returns dL/d(input) per
input, or None where `ctx.needs_grad` says that input wants none. Binary ops broadcast,
so each gradient is summed back to its input's shape by `unbroadcast`.
"""


from .. import backend
from ..function import Function, register


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the adjoint of broadcasting `shape` up to grad.shape.

    Leading axes that broadcasting added are summed away, and axes where `shape` has
    size 1 are summed keeping their dimension (Chainer's and DeZero's `sum_to`).
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def broadcast_error(op, **arrays):
    """The ValueError for operands whose shapes do not broadcast, naming every shape.

    Ops raise it from NumPy's or CuPy's own ValueError instead of checking the shapes
    beforehand, so valid calls (the hot path) pay nothing for it.
    """
    shapes = ", ".join(f"{name} {tuple(a.shape)}" for name, a in arrays.items())
    return ValueError(
        f"{op}: shapes do not broadcast: {shapes} (each trailing dimension must be equal "
        f"or 1 in both)")


@register("add")
class AddOp(Function):
    """y = a + b;  da = dy,  db = dy  (each summed back to its input's shape)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        try:
            return a + b
        except ValueError:
            raise broadcast_error("add", a=a, b=b) from None

    @staticmethod
    def backward(ctx, dy):
        sa, sb = ctx.shapes
        da, db = ctx.needs_grad
        return (unbroadcast(dy, sa) if da else None), (unbroadcast(dy, sb) if db else None)


@register("sub")
class SubOp(Function):
    """y = a - b;  da = dy,  db = -dy."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        try:
            return a - b
        except ValueError:
            raise broadcast_error("sub", a=a, b=b) from None

    @staticmethod
    def backward(ctx, dy):
        sa, sb = ctx.shapes
        da, db = ctx.needs_grad
        return (unbroadcast(dy, sa) if da else None), (unbroadcast(-dy, sb) if db else None)


@register("mul")
class MulOp(Function):
    """y = a * b;  da = dy * b,  db = dy * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        try:
            return a * b
        except ValueError:
            raise broadcast_error("mul", a=a, b=b) from None

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved
        da, db = ctx.needs_grad
        return (unbroadcast(dy * b, a.shape) if da else None,
                unbroadcast(dy * a, b.shape) if db else None)


@register("div")
class DivOp(Function):
    """y = a / b;  da = dy / b,  db = -dy * a / b^2 = -dy * y / b."""

    @staticmethod
    def forward(ctx, a, b):
        try:
            y = a / b
        except ValueError:
            raise broadcast_error("div", a=a, b=b) from None
        ctx.save(a, b, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        a, b, y = ctx.saved
        da, db = ctx.needs_grad
        return (unbroadcast(dy / b, a.shape) if da else None,
                unbroadcast(-dy * y / b, b.shape) if db else None)


@register("neg")
class NegOp(Function):
    """y = -x;  dx = -dy."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, dy):
        return (-dy,)


@register("pow")
class PowOp(Function):
    """y = a ** b;  da = dy * b * a^(b-1),  db = dy * y * log(a).

    db is only computed when the exponent is a tensor that requires grad (a constant
    exponent such as x ** 2 costs no log); it is taken as 0 where a = 0 (a**b is flat
    in b there for b > 0).
    """

    @staticmethod
    def forward(ctx, a, b):
        try:
            y = a ** b
        except ValueError:
            raise broadcast_error("pow", a=a, b=b) from None
        ctx.save(a, b, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        a, b, y = ctx.saved
        need_a, need_b = ctx.needs_grad
        da = db = None
        if need_a:
            da = unbroadcast(dy * b * a ** (b - 1), a.shape)
        if need_b:
            xp = backend.array_module(a)
            safe = xp.where(a > 0, a, 1)
            db = unbroadcast(dy * y * xp.log(safe), b.shape)
        return da, db


@register("exp")
class ExpOp(Function):
    """y = exp(x);  dx = dy * y  (saves y, not x)."""

    @staticmethod
    def forward(ctx, x):
        y = backend.array_module(x).exp(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy * y,)


@register("log")
class LogOp(Function):
    """y = log(x);  dx = dy / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return backend.array_module(x).log(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        return (dy / x,)


@register("sqrt")
class SqrtOp(Function):
    """y = sqrt(x);  dx = dy / (2 y)  (saves y)."""

    @staticmethod
    def forward(ctx, x):
        y = backend.array_module(x).sqrt(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy / (2 * y),)


@register("tanh")
class TanhOp(Function):
    """y = tanh(x);  dx = dy * (1 - y^2)  (saves y)."""

    @staticmethod
    def forward(ctx, x):
        y = backend.array_module(x).tanh(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy * (1 - y * y),)


@register("sigmoid")
class SigmoidOp(Function):
    """y = 1 / (1 + exp(-x));  dx = dy * y * (1 - y)  (saves y).

    Computed as 0.5 * (1 + tanh(x / 2)), which is the same function but never
    overflows exp for large |x|.
    """

    @staticmethod
    def forward(ctx, x):
        xp = backend.array_module(x)
        y = xp.tanh(x * 0.5)
        y += 1
        y *= 0.5
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy * y * (1 - y),)


@register("relu")
class ReluOp(Function):
    """y = max(x, 0);  dx = dy where x > 0, else 0  (relu'(0) = 0, as PyTorch)."""

    @staticmethod
    def forward(ctx, x):
        y = backend.array_module(x).maximum(x, 0)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return (dy * (y > 0),)


@register("abs")
class AbsOp(Function):
    """y = |x|;  dx = dy * sign(x)  (sign(0) = 0, as PyTorch)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return backend.array_module(x).abs(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        return (dy * backend.array_module(x).sign(x),)


@register("masked_fill")
class MaskedFillOp(Function):
    """y = value where mask, else x;  dx = dy where not mask, else 0.

    The mask (boolean, broadcastable to x) is the op's second input; it gets no gradient.
    """

    @staticmethod
    def forward(ctx, x, mask, value):
        xp = backend.array_module(x)
        try:
            fits = xp.broadcast_shapes(x.shape, mask.shape) == x.shape
        except ValueError:  # not even broadcastable together
            fits = False
        if not fits:
            raise ValueError(
                f"masked_fill: mask of shape {mask.shape} does not broadcast to the input's "
                f"shape {x.shape}")
        ctx.save(mask)
        return xp.where(mask, xp.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved
        return backend.array_module(dy).where(mask, 0, dy).astype(dy.dtype, copy=False), None


@register("where")
class WhereOp(Function):
    """y = a where cond, else b;  da = dy where cond (else 0),  db = dy where not cond."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save(cond)
        ctx.shapes = a.shape, b.shape
        try:
            return backend.array_module(a).where(cond, a, b)
        except ValueError:
            raise broadcast_error("where", condition=cond, input=a, other=b) from None

    @staticmethod
    def backward(ctx, dy):
        (cond,) = ctx.saved
        sa, sb = ctx.shapes
        xp = backend.array_module(dy)
        _, need_a, need_b = ctx.needs_grad
        zero = xp.zeros((), dtype=dy.dtype)
        da = unbroadcast(xp.where(cond, dy, zero), sa) if need_a else None
        db = unbroadcast(xp.where(cond, zero, dy), sb) if need_b else None
        return None, da, db


@register("clone")
class CloneOp(Function):
    """y = a copy of x;  dx = dy."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, dy):
        return (dy,)


@register("cast")
class CastOp(Function):
    """y = x converted to `dtype`;  dx = dy converted back to x's dtype."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, dy):
        return (dy.astype(ctx.dtype),)


@register("to_device")
class ToDeviceOp(Function):
    """y = x copied to `device`;  dx = dy copied back to x's device."""

    @staticmethod
    def forward(ctx, x, device):
        ctx.device = backend.device_of(x)
        return backend.to_device(x, device)

    @staticmethod
    def backward(ctx, dy):
        return (backend.to_device(dy, ctx.device),)
