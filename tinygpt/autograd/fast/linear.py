"""Fast CPU kernels of `linear` and `matmul`: the same products, shared out over tinygpt's
threads (floor 2). Each equals its reference in `tinygpt/autograd/ops/` (fused.py's LinearOp,
matmul.py's MatMulOp) to the last bit where the products are the same dot products.

Two changes of layout, not of arithmetic: a stack of rows times one matrix runs as one
(N, in) @ (in, out) product, which BLAS runs faster than a batch of small ones; and a
Linear's backward hands dx and dW to the threads together (`products.matmuls`), one
product a thread. The bias gradient is a product with a vector of ones
(`products.column_sums`), which BLAS runs 2-3x as fast as a sum over rows.
"""

from ..function import register_kernel
from ..ops.matmul import MatMulOp, batch_error, check_shapes
from ..ops.fused import LinearOp, check_features
from . import products
from .threads import CPU_DTYPES, blas_on_tinygpt_threads


@register_kernel("linear", dtypes=CPU_DTYPES)
class LinearThreadsOp(LinearOp):
    """linear on the CPU: x viewed as (N, in); y = x @ W^T + b as one product, dx and dW
    computed together (equals ops/fused.py's LinearOp)."""

    @staticmethod
    @blas_on_tinygpt_threads
    def forward(ctx, x, weight, bias=None):
        check_features(x, weight)
        x2 = x.reshape(-1, x.shape[-1])                     # (N, in)
        y = products.matmul(x2, weight.T, add=bias)         # (N, out)
        ctx.save(x2, weight)
        ctx.lead = x.shape[:-1]
        return y.reshape(ctx.lead + (weight.shape[0],))

    @staticmethod
    @blas_on_tinygpt_threads
    def backward(ctx, dy):
        x2, weight = ctx.saved
        dy2 = dy.reshape(-1, dy.shape[-1])                  # (N, out)
        need = ctx.needs_grad
        jobs = ([(dy2, weight)] if need[0] else []) + ([(dy2.T, x2)] if need[1] else [])
        results = iter(products.matmuls(jobs))              # dx and dW together
        dx = next(results).reshape(ctx.lead + (weight.shape[1],)) if need[0] else None
        dw = next(results) if need[1] else None
        db = products.column_sums(dy2) if len(need) > 2 and need[2] else None
        return dx, dw, db


@register_kernel("matmul", dtypes=CPU_DTYPES)
class MatMulThreadsOp(MatMulOp):
    """matmul on the CPU: a stack times one matrix as one 2-D product (the batch summed
    inside the product for db), large products on tinygpt's threads (equals
    ops/matmul.py's MatMulOp)."""

    @staticmethod
    @blas_on_tinygpt_threads
    def forward(ctx, a, b):
        check_shapes(a, b)
        ctx.save(a, b)
        if b.ndim == 2 and a.ndim > 2:
            y = products.matmul(a.reshape(-1, a.shape[-1]), b)
            return y.reshape(a.shape[:-1] + (b.shape[1],))
        try:
            return products.matmul(a, b)
        except ValueError:  # the batch axes do not broadcast
            raise batch_error(a, b) from None

    @staticmethod
    @blas_on_tinygpt_threads
    def backward(ctx, dy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_grad
        if not (b.ndim == 2 and a.ndim > 2):
            return MatMulOp.backward(ctx, dy)                 # no layout to change
        da = db = None
        if need_a:                                          # (N, m) @ (m, k)
            da = products.matmul(dy.reshape(-1, dy.shape[-1]), b.T).reshape(a.shape)
        if need_b:                                          # (N, k)^T @ (N, m): the batch
            db = products.matmul(a.reshape(-1, a.shape[-1]).T,   # summed inside
                                 dy.reshape(-1, dy.shape[-1]))
        return da, db

