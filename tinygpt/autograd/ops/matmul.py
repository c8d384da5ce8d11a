"""Matrix product with NumPy's `matmul` semantics: 1-D, 2-D and batched (floor 2).

y = a @ b;  da = dy @ b^T,  db = a^T @ dy  (transposes of the last two axes), each
summed back to its input's shape where the batch axes were broadcast. A 1-D `a` is
treated as a row (1, k) and a 1-D `b` as a column (k, 1), then the extra axis dropped.
"""

from ..function import Function, register
from .elementwise import unbroadcast


@register("matmul")
class MatMulOp(Function):
    """y = a @ b;  da = dy @ b^T,  db = a^T @ dy  (saves a and b)."""

    @staticmethod
    def forward(ctx, a, b):
        check_shapes(a, b)
        ctx.save(a, b)
        try:
            return a @ b
        except ValueError:  # the batch axes do not broadcast
            raise batch_error(a, b) from None

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_grad
        # Promote 1-D operands to matrices so one rule serves all cases.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # b's axis first: for 1-D @ 1-D, dy is 0-d and becomes (1,) then (1, 1).
        if b.ndim == 1:
            dy = dy[..., None]
        if a.ndim == 1:
            dy = dy[..., None, :]
        da = unbroadcast(dy @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape) if need_a else None
        db = unbroadcast(a2.swapaxes(-1, -2) @ dy, b2.shape).reshape(b.shape) if need_b else None
        return da, db


def check_shapes(a, b):
    """Raise a ValueError naming both shapes when a @ b has no meaning."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and "
            f"{b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not match: the last dimension of "
            f"the first ({a.shape[-1]}) must equal the "
            f"{'second-to-last' if b.ndim > 1 else 'only'} dimension of the second")


def batch_error(a, b):
    """The ValueError for batch axes that do not broadcast."""
    return ValueError(
        f"matmul: the batch dimensions of shapes {a.shape} and {b.shape} "
        f"({a.shape[:-2]} and {b.shape[:-2]}) do not broadcast")
