"""Fast CPU kernels of `softmax`, `log_softmax` and `cross_entropy` (floor 2): the
reference formulas of ops/fused.py, run row block by row block (`threads.for_blocks`) with
in-place ufuncs, so a block's shift, exp, sum and division stay in a core's cache and the
blocks share tinygpt's threads. Along an axis other than the last, softmax and
log-softmax run the reference code.
"""

import numpy as np

from .. import backend
from ..function import register_kernel
from ..ops.fused import CrossEntropyOp, LogSoftmaxOp, SoftmaxOp
from .threads import CPU_DTYPES, as_rows, for_blocks


def by_row_blocks(row_fn, x, *others):
    """out = row_fn applied to x (and arrays of x's shape) along their last axis, one row
    block at a time on tinygpt's threads: row_fn(xp, out_rows, x_rows, *other_rows)
    writes its rows of out, a new array of x's shape and dtype."""
    xp = backend.array_module(x)
    x2, others2 = as_rows(x), [as_rows(a) for a in others]
    out = xp.empty(x2.shape, dtype=x.dtype)
    for_blocks(lambda r: row_fn(xp, out[r], x2[r], *(a[r] for a in others2)), x2)
    return out.reshape(x.shape)


def _shift_by_row_max(xp, x, out):
    """out = x - (the max of each row of x)."""
    xp.subtract(x, x.max(axis=1, keepdims=True), out=out)


def _softmax_rows(xp, y, x):
    _shift_by_row_max(xp, x, y)
    xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)


def _softmax_grad_rows(xp, dx, y, dy):
    xp.multiply(dy, y, out=dx)
    dx -= y * dx.sum(axis=1, keepdims=True)


def _log_softmax_rows(xp, y, x):
    _shift_by_row_max(xp, x, y)
    y -= xp.log(xp.exp(y).sum(axis=1, keepdims=True))


def _log_softmax_grad_rows(xp, dx, y, dy):
    xp.exp(y, out=dx)
    dx *= dy.sum(axis=1, keepdims=True)
    xp.subtract(dy, dx, out=dx)


@register_kernel("softmax", dtypes=CPU_DTYPES)
class SoftmaxBlockedOp(SoftmaxOp):
    """softmax on the CPU, in row blocks along the last axis (equals ops/fused.py's SoftmaxOp)."""

    @staticmethod
    def forward(ctx, x, axis):
        if axis != x.ndim - 1:
            return SoftmaxOp.forward(ctx, x, axis)
        ctx.axis = axis
        y = by_row_blocks(_softmax_rows, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis != y.ndim - 1:
            return SoftmaxOp.backward(ctx, dy)
        return (by_row_blocks(_softmax_grad_rows, y, dy),)


@register_kernel("log_softmax", dtypes=CPU_DTYPES)
class LogSoftmaxBlockedOp(LogSoftmaxOp):
    """log_softmax on the CPU, in row blocks along the last axis (equals ops/fused.py's
    LogSoftmaxOp)."""

    @staticmethod
    def forward(ctx, x, axis):
        if axis != x.ndim - 1:
            return LogSoftmaxOp.forward(ctx, x, axis)
        ctx.axis = axis
        y = by_row_blocks(_log_softmax_rows, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis != y.ndim - 1:
            return LogSoftmaxOp.backward(ctx, dy)
        return (by_row_blocks(_log_softmax_grad_rows, y, dy),)


@register_kernel("cross_entropy", dtypes=CPU_DTYPES)
class CrossEntropyBlockedOp(CrossEntropyOp):
    """cross_entropy on the CPU, in row blocks: each block's shift, exp, sum, division and
    picked logits stay in cache; the backward writes (p - 1) * s at each target (equals
    ops/fused.py's CrossEntropyOp)."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction):
        xp = backend.array_module(logits)
        n = logits.shape[0]
        valid = targets != ignore_index
        safe = xp.where(valid, targets, 0)                 # any class index for ignored rows
        probs = xp.empty(logits.shape, dtype=logits.dtype)
        nll = xp.empty(n, dtype=logits.dtype)

        def block(rows):
            pb = probs[rows]                                # shifted logits, then softmax
            _shift_by_row_max(xp, logits[rows], pb)
            picked = pb[xp.arange(pb.shape[0]), safe[rows]]  # shifted logit of each target
            xp.exp(pb, out=pb)
            total = pb.sum(axis=1)
            pb /= total[:, None]
            xp.subtract(xp.log(total), picked, out=nll[rows])

        for_blocks(block, logits)
        nll *= valid                                        # 0 on ignored rows
        count = int(valid.sum())                            # a host number: CPU only
        ctx.save(probs, safe, valid)
        ctx.reduction, ctx.count = reduction, count
        if reduction == "none":
            return nll
        loss = nll.sum()
        if reduction == "mean":
            # 0/0 when every target is ignored: NaN, as PyTorch.
            loss = loss / logits.dtype.type(count) if count else logits.dtype.type(np.nan)
        return xp.asarray(loss, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dy):
        probs, safe, valid = ctx.saved
        xp = backend.array_module(probs)
        if ctx.reduction == "mean":
            scale = valid * (dy / dy.dtype.type(max(ctx.count, 1)))
        else:
            scale = dy * valid                              # (N,) or a 0-d dy broadcast
        scale = scale.astype(probs.dtype, copy=False)
        dx = xp.empty(probs.shape, dtype=probs.dtype)

        def block(rows):
            xp.multiply(probs[rows], scale[rows, None], out=dx[rows])

        for_blocks(block, probs)
        rows = xp.arange(len(safe))
        dx[rows, safe] = (probs[rows, safe] - 1) * scale   # the target's -1, as (p - 1) * s
        return dx, None
