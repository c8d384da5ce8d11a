"""Fused GPU kernels of `layer_norm` (floor 2): ops/fused.py's LayerNormOp in four kernels
forward and five backward, where the reference runs about ten and fifteen.

x is viewed as (N, D) rows. Forward: the row means (one reduction), the row sums of
(x - mean)^2 (one reduction), rstd = 1 / sqrt(sum / D + eps) (a kernel over N numbers:
after a reduction a fused kernel can use no argument but the reduced value), and
y = (x - mean) rstd w + b (one elementwise kernel). Backward, with n = (x - mean) rstd
recomputed inside each kernel and dn = dy w:

    a = sum(dn) and b = sum(dn n) over each row        (two reductions)
    dx = rstd (dn - a / D - n b / D)                   (one kernel: the reference's formula)
    dw = sum of dy n over the rows, db = sum of dy     (two column reductions)

Each kernel reads its inputs once and writes one output; no temporary of x's size exists.
"""

import math

from ... import backend
from ...function import register_kernel
from . import FUSED_DTYPES
from ...ops.fused import LayerNormOp


def _sum_of_squares(xp, x, mean):
    return xp.sum((x - mean) * (x - mean), axis=1)


def _rstd(xp, sum_of_squares, d, eps):
    return 1.0 / xp.sqrt(sum_of_squares / d + eps)


def _normalize(xp, x, mean, rstd, weight, bias):
    return (x - mean) * rstd * weight + bias


def _row_sum_dn(xp, dy, weight):
    return xp.sum(dy * weight, axis=1)


def _row_sum_dn_n(xp, dy, weight, x, mean, rstd):
    return xp.sum(dy * weight * ((x - mean) * rstd), axis=1)


def _input_grad(xp, dy, weight, x, mean, rstd, a, b, d):
    return rstd * (dy * weight - a / d - (x - mean) * rstd * (b / d))


def _weight_grad(xp, dy, x, mean, rstd):
    return xp.sum(dy * ((x - mean) * rstd), axis=0)


SUM_OF_SQUARES = backend.fuse(_sum_of_squares, "layer_norm_sum_of_squares")
RSTD = backend.fuse(_rstd, "layer_norm_rstd")
NORMALIZE = backend.fuse(_normalize, "layer_norm_normalize")
ROW_SUM_DN = backend.fuse(_row_sum_dn, "layer_norm_row_sum_dn")
ROW_SUM_DN_N = backend.fuse(_row_sum_dn_n, "layer_norm_row_sum_dn_n")
INPUT_GRAD = backend.fuse(_input_grad, "layer_norm_input_grad")
WEIGHT_GRAD = backend.fuse(_weight_grad, "layer_norm_weight_grad")


@register_kernel("layer_norm", devices=("cuda",), dtypes=FUSED_DTYPES)
class LayerNormFusedOp(LayerNormOp):
    """layer_norm on a GPU in fused kernels (equals ops/fused.py's LayerNormOp). Saves x,
    w, the row means and rstd, as the reference."""

    @staticmethod
    def forward(ctx, x, *params, n_axes, eps, has_weight, has_bias):
        weight = params[0].reshape(-1) if has_weight else None
        bias = params[-1].reshape(-1) if has_bias else None
        d = math.prod(x.shape[x.ndim - n_axes:])
        x2 = x.reshape(-1, d)                                       # (N, D)
        mean = x2.mean(axis=1, keepdims=True)                       # (N, 1)
        rstd = RSTD(SUM_OF_SQUARES(x2, mean).reshape(-1, 1), float(d), eps)   # (N, 1)
        y = NORMALIZE(x2, mean, rstd, 1.0 if weight is None else weight,
                      0.0 if bias is None else bias)
        ctx.save(x2, weight, mean, rstd)
        ctx.shape, ctx.has_weight, ctx.has_bias = x.shape, has_weight, has_bias
        ctx.param_shape = x.shape[x.ndim - n_axes:]
        return y.reshape(x.shape).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved
        dy2 = dy.reshape(x2.shape)
        d = float(x2.shape[1])
        w = 1.0 if weight is None else weight
        a = ROW_SUM_DN(dy2, w).reshape(-1, 1)                       # sum(dn) per row
        b = ROW_SUM_DN_N(dy2, w, x2, mean, rstd).reshape(-1, 1)     # sum(dn n) per row
        grads = [INPUT_GRAD(dy2, w, x2, mean, rstd, a, b, d).reshape(ctx.shape)]
        need = ctx.needs_grad
        if ctx.has_weight:
            grads.append(WEIGHT_GRAD(dy2, x2, mean, rstd).reshape(ctx.param_shape)
                         if need[1] else None)
        if ctx.has_bias:
            grads.append(dy2.sum(axis=0).reshape(ctx.param_shape) if need[-1] else None)
        return tuple(grads)
