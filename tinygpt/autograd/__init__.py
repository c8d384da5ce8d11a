"""The autograd engine (floor 2): `Tensor`, the ops, the backward pass, `gradcheck`, and
the instruments to look inside it: `to_dot` (the graph) and `trace` (every op run, timed).

Imports only `backend` (floor 1), tinygpt.validate and its own modules.
"""

from .tensor import Tensor  # noqa: F401
from .dtypes import bool_, float16, float32, float64, int32, int64, uint8  # noqa: F401
from .factories import (arange, cat, full, manual_seed, ones, ones_like, rand,  # noqa: F401
                        randint, randn, stack, tensor, where, zeros, zeros_like)
from .function import (KERNELS, OPS, Function, enable_grad, is_grad_enabled, no_grad,  # noqa: F401
                       reference_ops_enabled, register, register_kernel, use_reference_ops)
from .engine import backward  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from . import ops  # noqa: F401  (registers every op: the references)
from . import fast  # noqa: F401  (registers the fast kernels)
from .graph import to_dot  # noqa: F401
from .trace import Record, trace  # noqa: F401
