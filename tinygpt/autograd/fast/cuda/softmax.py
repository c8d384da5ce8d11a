"""Fused GPU kernels of `softmax`, `log_softmax` and `cross_entropy` (floor 2), along the
last axis: ops/fused.py's formulas with the row max (one reduction), the row sum of
exp(x - max) (one reduction, the exp computed inside it) and the output (one elementwise
kernel), instead of a kernel and a temporary array per line.

Cross-entropy never forms the softmax in the forward pass: it needs only each row's
log-sum-exp and the logit of the target, and saves the logits themselves (which the
layer before made anyway) with the (N, 1) log-sum-exp. The backward makes
dlogits = (exp(logits - lse) - onehot(t)) * scale in one kernel, the one-hot written as a
comparison of each column index with the row's target, not a scatter. Along an axis
other than the last, softmax and log-softmax run the reference code.
"""

import numpy as np

from ... import backend
from ...function import register_kernel
from . import FUSED_DTYPES
from ...ops.fused import CrossEntropyOp, LogSoftmaxOp, SoftmaxOp


def _sum_exp(xp, x, shift):
    return xp.sum(xp.exp(x - shift), axis=1)


def _log_sum_exp(xp, x, shift):
    return xp.log(xp.sum(xp.exp(x - shift), axis=1))


def _softmax(xp, x, shift, total):
    return xp.exp(x - shift) / total


def _softmax_grad(xp, y, dy, dot):
    return y * (dy - dot)


def _row_dot(xp, a, b):
    return xp.sum(a * b, axis=1)


def _log_softmax(xp, x, shift, lse):
    return x - shift - lse


def _log_softmax_grad(xp, y, dy, total):
    return dy - xp.exp(y) * total


def _cross_entropy_grad(xp, logits, lse, column, target, scale):
    p = xp.exp(logits - lse)                                      # softmax, recomputed
    return xp.where(column == target, p - 1.0, p) * scale


SUM_EXP = backend.fuse(_sum_exp, "softmax_sum_exp")
LOG_SUM_EXP = backend.fuse(_log_sum_exp, "softmax_log_sum_exp")
SOFTMAX = backend.fuse(_softmax, "softmax")
SOFTMAX_GRAD = backend.fuse(_softmax_grad, "softmax_grad")
ROW_DOT = backend.fuse(_row_dot, "softmax_row_dot")
LOG_SOFTMAX = backend.fuse(_log_softmax, "log_softmax")
LOG_SOFTMAX_GRAD = backend.fuse(_log_softmax_grad, "log_softmax_grad")
CROSS_ENTROPY_GRAD = backend.fuse(_cross_entropy_grad, "cross_entropy_grad")


def _rows(x):
    """x as (N, K) rows along its last axis, and the row max (N, 1)."""
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    return x2, x2.max(axis=1, keepdims=True)


@register_kernel("softmax", devices=("cuda",), dtypes=FUSED_DTYPES)
class SoftmaxFusedOp(SoftmaxOp):
    """softmax on a GPU along the last axis in three kernels, its backward in two (equals
    ops/fused.py's SoftmaxOp). Saves y."""

    @staticmethod
    def forward(ctx, x, axis):
        if axis != x.ndim - 1 or x.size == 0:
            return SoftmaxOp.forward(ctx, x, axis)
        ctx.axis = axis
        x2, shift = _rows(x)
        y = SOFTMAX(x2, shift, SUM_EXP(x2, shift).reshape(-1, 1)).reshape(x.shape)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis != y.ndim - 1 or y.size == 0:
            return SoftmaxOp.backward(ctx, dy)
        y2, dy2 = y.reshape(-1, y.shape[-1]), dy.reshape(-1, y.shape[-1])
        dot = ROW_DOT(dy2, y2).reshape(-1, 1)                       # sum(dy * y) per row
        return (SOFTMAX_GRAD(y2, dy2, dot).reshape(y.shape),)


@register_kernel("log_softmax", devices=("cuda",), dtypes=FUSED_DTYPES)
class LogSoftmaxFusedOp(LogSoftmaxOp):
    """log_softmax on a GPU along the last axis in three kernels, its backward in two
    (equals ops/fused.py's LogSoftmaxOp). Saves y."""

    @staticmethod
    def forward(ctx, x, axis):
        if axis != x.ndim - 1 or x.size == 0:
            return LogSoftmaxOp.forward(ctx, x, axis)
        ctx.axis = axis
        x2, shift = _rows(x)
        lse = LOG_SUM_EXP(x2, shift).reshape(-1, 1)
        y = LOG_SOFTMAX(x2, shift, lse).reshape(x.shape)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis != y.ndim - 1 or y.size == 0:
            return LogSoftmaxOp.backward(ctx, dy)
        y2, dy2 = y.reshape(-1, y.shape[-1]), dy.reshape(-1, y.shape[-1])
        total = dy2.sum(axis=1, keepdims=True)
        return (LOG_SOFTMAX_GRAD(y2, dy2, total).reshape(y.shape),)


@register_kernel("cross_entropy", devices=("cuda",), dtypes=FUSED_DTYPES)
class CrossEntropyFusedOp(CrossEntropyOp):
    """cross_entropy on a GPU: two reductions over the logits forward, one kernel over
    them backward, no softmax kept (equals ops/fused.py's CrossEntropyOp). Saves the logits,
    each row's log-sum-exp, the targets and which rows count; the count of those stays on
    the device."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction):
        xp = backend.array_module(logits)
        n = logits.shape[0]
        valid = targets != ignore_index                             # (N,) rows that count
        t = xp.where(valid, targets, 0)                             # any class for ignored
        shift = logits.max(axis=1, keepdims=True)                   # (N, 1)
        lse = LOG_SUM_EXP(logits, shift).reshape(-1, 1) + shift     # (N, 1) log-sum-exp
        picked = logits[xp.arange(n), t]                            # logit of each target
        nll = (lse[:, 0] - picked) * valid                          # (N,), 0 if ignored
        ctx.save(logits, lse, t, valid)
        ctx.reduction = reduction
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        with np.errstate(invalid="ignore"):                         # all ignored: NaN
            return nll.sum() / valid.sum().astype(logits.dtype)

    @staticmethod
    def backward(ctx, dy):
        logits, lse, t, valid = ctx.saved
        xp = backend.array_module(logits)
        if ctx.reduction == "mean":
            scale = dy * valid / xp.maximum(valid.sum(), 1).astype(logits.dtype)
        else:
            scale = dy * valid                                      # (N,) or 0-d dy
        scale = scale.astype(logits.dtype, copy=False).reshape(-1, 1)
        column = xp.arange(logits.shape[1]).reshape(1, -1)          # (1, V)
        return CROSS_ENTROPY_GRAD(logits, lse, column, t.reshape(-1, 1), scale), None
