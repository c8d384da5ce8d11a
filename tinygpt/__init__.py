"""tinygpt: a GPT you can read end to end, on a from-scratch autograd engine.

The package is built in floors. A floor is a layer of modules that imports only from the
floors below it, never from above; each module's docstring names its floor ("(floor 2)")
and what it may import. From the bottom (docs/architecture.md has the whole table):

    1  autograd/backend.py, erf.py, splitmix.py   the array module of a device, random numbers
    2  autograd/                                   Tensor, the ops and their fast kernels,
                                                   backward, gradcheck
    3  nn/                                         functional layer ops, Module, the layers
    4  optim/, data/                               AdamW, schedules; tokenizers, batches
    5  model/                                      GPT, generation, checkpoints, weight files
    6  train/                                      the training loop, data parallelism
    7  cli/, __main__.py                           `python -m tinygpt COMMAND`

files.py and memory.py (standard library only) may be imported from any floor. Beside the
package, bench/, tools/ and examples/ use it; nothing in it imports them.

This file only re-exports the public API.
"""

from .autograd import (OPS, Tensor, arange, bool_, cat, enable_grad, float16, float32,  # noqa: F401
                       float64, full, gradcheck, int32, int64, is_grad_enabled, manual_seed,
                       no_grad, ones, ones_like, rand, randint, randn, stack, tensor, to_dot,
                       trace, uint8, use_reference_ops, where, zeros, zeros_like)
from . import nn, optim, data  # noqa: F401
from .model import GPT, GPTConfig  # noqa: F401

__version__ = "0.1.0"
