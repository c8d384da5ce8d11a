"""Fast kernels: the layer ops of `tinygpt/autograd/ops/` again, faster on one device
(floor 2). Importing this package registers them.

Each kernel subclasses the reference op it speeds up, keeps its name, and is registered
for a device with `register_kernel(name, devices)`; `Function.apply` runs it in place of
the reference on that device, unless `tg.use_reference_ops()` (or TINYGPT_REFERENCE_OPS=1)
asks for the references everywhere. Every kernel is tested equal to its reference, on every
branch it has (tests/autograd/test_fast_kernels.py).

| op | kernel | module | what makes it fast |
| --- | --- | --- | --- |
| linear, matmul | LinearThreadsOp, MatMulThreadsOp | linear.py | one 2-D product; products on tinygpt's threads (thin ones by columns) |
| softmax, log_softmax, cross_entropy | *Blocked | softmax.py | row blocks in cache, on threads |
| layer_norm | LayerNormBlockedOp | layer_norm.py | row blocks; two numbers a row stand in for n |
| gelu | GeluBlockedOp | gelu.py | blocks; Phi read off the output in backward |
| embedding | EmbeddingOneHotOp | embedding.py | backward as a one-hot product |
| self_attention | SelfAttentionTiledOp | attention.py | flash-style tiles, no T x T array kept |

The GPU's kernels (`fast/cuda/`, registered for "cuda") fuse each memory-bound op into
one or a few GPU launches through `backend.fuse` (see that package's table).

The CPU machinery: `threads` (a worker pool, `parallel_map`, `for_blocks`), `blas`
(NumPy's BLAS thread count), `products` (products shared out over the threads) and
`malloc` (allocator tuning, an explicit call made by the trainer). No reference op uses
any of it.
"""

from . import attention, cuda, embedding, gelu, layer_norm, linear, softmax  # noqa: F401
