"""tinygpt: a GPT you can read end to end, on a from-scratch autograd engine.

This file only re-exports the public API.
"""

from .autograd import (OPS, Tensor, arange, bool_, cat, enable_grad, float16, float32,  # noqa: F401
                       float64, full, gradcheck, int32, int64, is_grad_enabled, manual_seed,
                       no_grad, ones, ones_like, rand, randint, randn, stack, tensor, to_dot,
                       trace, uint8, use_reference_ops, where, zeros, zeros_like)
from . import nn, optim, data  # noqa: F401
from .model import GPT, GPTConfig  # noqa: F401

__version__ = "0.1.0"
