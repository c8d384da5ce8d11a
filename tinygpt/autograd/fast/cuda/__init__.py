"""Fused GPU kernels: the memory-bound layer ops of `tinygpt/autograd/ops/` again, each
direction in as few passes over GPU memory as its formula allows (floor 2). Importing
this package registers them for the "cuda" device.

Each formula is plain array code compiled into one CUDA kernel by `backend.fuse`
(`cupy.fuse`): elementwise operations and at most one reduction per kernel. On NumPy
arrays, and on the test suite's CuPy stand-in, the same functions run as array code, so
each kernel is tested equal to its reference op without a GPU (tests/autograd/
test_fast_kernels.py); the GPU check (`python -m tinygpt.bench gpu`) runs those tests on a
real GPU, where the kernels are compiled.

| op | kernel | module | kernels forward / backward (reference's) |
| --- | --- | --- | --- |
| gelu | GeluFusedOp | gelu.py | 1 / 1 (about 10 / 15) |
| layer_norm | LayerNormFusedOp | layer_norm.py | 4 / 5 (about 10 / 15) |
| softmax, log_softmax | SoftmaxFusedOp, LogSoftmaxFusedOp | softmax.py | 3 / 2 (5 / 4) |
| cross_entropy | CrossEntropyFusedOp | softmax.py | 2 passes over the logits / 1 (6 / 2), no softmax kept |
| self_attention, scaled_dot_product_attention | SelfAttentionFusedOp, ScaledDotProductAttentionFusedOp | attention.py | the masked softmax in 3 / 2 (about 11 / 4), no T x S array kept |
"""

import numpy as np

# The dtypes the fused kernels run; float16 data runs the references, which sum in float32.
FUSED_DTYPES = (np.float32, np.float64)

from . import attention, gelu, layer_norm, softmax  # noqa: E402,F401
