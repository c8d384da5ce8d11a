"""Optimisation (floor 4): AdamW, SGD, gradient clipping, learning-rate schedules, and
mixed precision (float32 master weights, dynamic loss scaling: `amp`).

Optimizers update `Tensor`s in place from their `.grad`, working on the backend arrays
(NumPy or CuPy) with in-place ufuncs. Gradient accumulation needs nothing here: call
`backward()` on `loss / n_micro` for each micro-batch and the engine adds every
micro-batch's gradient into `.grad`; then clip, `step()` and `zero_grad()` once.

Imports: autograd only.
"""

from .optimizer import Optimizer  # noqa: F401
from .adamw import AdamW, configure_param_groups  # noqa: F401
from .sgd import SGD  # noqa: F401
from .clip import clip_grad_norm_  # noqa: F401
from .amp import GradScaler, copy_to, master_copy  # noqa: F401
from .schedule import (SCHEDULES, Schedule, constant, cosine_with_warmup,  # noqa: F401
                       get_schedule, linear_schedule)
