"""Fast CPU kernel of `layer_norm` (floor 2): ops/fused.py's LayerNormOp, row block by row
block on tinygpt's threads, with the same formula rearranged to need fewer passes.

Forward: the row means as one matrix-vector product with a vector of 1/D (BLAS), the sum
of squares through einsum (no temporary), n built in place in the output.
Backward: the reference's dx = rstd (dn - mean(dn) - n mean(dn n)) with n = c rstd
(c = x - mean) is rstd dn - rstd mean(dn) + b c, b = -rstd^3 mean(dn c): two numbers a
row stand in for n, which is never formed; dw's block sums are products rstd . (dy * c).
"""

from .. import backend
from ..function import register_kernel
from ..ops.fused import LayerNormOp
from .products import column_sums
from .threads import CPU_DTYPES, blas_on_tinygpt_threads, for_blocks


@register_kernel("layer_norm", dtypes=CPU_DTYPES)
class LayerNormBlockedOp(LayerNormOp):
    """layer_norm on the CPU in row blocks, two numbers a row for n (equals ops/fused.py's
    LayerNormOp)."""

    @staticmethod
    @blas_on_tinygpt_threads
    def forward(ctx, x, *params, n_axes, eps, has_weight, has_bias):
        xp = backend.array_module(x)
        weight = params[0].reshape(-1) if has_weight else None
        bias = params[-1].reshape(-1) if has_bias else None
        d = 1
        for size in x.shape[x.ndim - n_axes:]:
            d *= size
        x2 = x.reshape(-1, d)                                   # (N, D)
        y2 = xp.empty_like(x2)
        mean = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        mean_weights = xp.full(d, 1.0 / d, dtype=x.dtype)       # row means as one gemv

        def block(rows):
            xb, nb, m, r = x2[rows], y2[rows], mean[rows], rstd[rows]   # n built in y
            xp.matmul(xb, mean_weights, out=m[:, 0])
            xp.subtract(xb, m, out=nb)
            var = xp.einsum("ij,ij->i", nb, nb)                 # sum of squares, no temporary
            var *= 1.0 / d
            var += eps
            r[:, 0] = var
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)
            nb *= r
            if weight is not None:
                nb *= weight
            if bias is not None:
                nb += bias

        for_blocks(block, x2)
        ctx.save(x2, mean, rstd, weight, mean_weights)
        ctx.shape, ctx.has_weight, ctx.has_bias = x.shape, has_weight, has_bias
        ctx.param_shape = x.shape[x.ndim - n_axes:]
        return y2.reshape(x.shape)

    @staticmethod
    @blas_on_tinygpt_threads
    def backward(ctx, dy):
        x2, mean, rstd, weight, mean_weights = ctx.saved
        xp = backend.array_module(dy)
        dy2 = dy.reshape(x2.shape)
        dx2 = xp.empty_like(x2)
        need_w = ctx.has_weight and ctx.needs_grad[1]

        def block(rows):
            dyb, dxb, r = dy2[rows], dx2[rows], rstd[rows]
            c = x2[rows] - mean[rows]                           # x - mean; n = c * rstd
            dn = dyb * weight if weight is not None else dyb
            r_dn = dn @ mean_weights                            # mean(dn)
            r_dn *= r[:, 0]
            b = xp.einsum("ij,ij->i", dn, c)
            b *= r[:, 0] ** 3
            b *= -1.0 / x2.shape[1]                             # b = -rstd^3 mean(dn c)
            dw = r[:, 0] @ (dyb * c) if need_w else None        # this block's sum of dy n
            xp.multiply(dn, r, out=dxb)
            c *= b[:, None]
            dxb += c
            dxb -= r_dn[:, None]                                # rstd dn + b c - rstd mean(dn)
            return dw

        dw_parts = for_blocks(block, x2)
        grads = [dx2.reshape(ctx.shape)]
        if ctx.has_weight:
            grads.append(sum(dw_parts[1:], dw_parts[0]).reshape(ctx.param_shape)
                         if need_w else None)
        if ctx.has_bias:
            grads.append(column_sums(dy2).reshape(ctx.param_shape)
                         if ctx.needs_grad[-1] else None)
        return tuple(grads)
