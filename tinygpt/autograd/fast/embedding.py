"""Fast CPU kernel of `embedding` (floor 2): the backward's scatter-add as one product.

dweight[idx] += dy (ops/fused.py's EmbeddingOp) adds each row of dy into the row of its index.
For a small vocabulary the same sums come out of one (V, N) @ (N, C) product with the
one-hot matrix of idx, which BLAS runs several times faster than NumPy's `np.add.at` loop
(docs/performance.md). Past ONE_HOT_LIMIT elements of that matrix (GPT-2's vocabulary
of 50,257 tokens), the kernel scatter-adds as the reference does.
"""

from .. import backend
from ..function import register_kernel
from ..ops.fused import EmbeddingOp
from .products import matmul
from .threads import blas_on_tinygpt_threads

# Largest one-hot matrix (V x N elements) the backward builds.
ONE_HOT_LIMIT = 1 << 24


@register_kernel("embedding")
class EmbeddingOneHotOp(EmbeddingOp):
    """embedding on the CPU: the backward as onehot(idx)^T @ dy for small vocabularies,
    the reference's scatter-add for large ones (equals ops/fused.py's EmbeddingOp)."""

    @staticmethod
    @blas_on_tinygpt_threads
    def backward(ctx, dy):
        (idx,) = ctx.saved
        xp = backend.array_module(dy)
        v, c = ctx.shape
        rows, dy2 = idx.reshape(-1), dy.reshape(-1, c)
        if v * len(rows) > ONE_HOT_LIMIT:
            return EmbeddingOp.backward(ctx, dy)
        one_hot = xp.zeros((v, len(rows)), dtype=dy.dtype)
        one_hot[rows, xp.arange(len(rows))] = 1
        return None, matmul(one_hot, dy2)
