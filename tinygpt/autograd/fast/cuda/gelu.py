"""Fused GPU kernel of `gelu` (floor 2): ops/fused.py's GeluOp with each direction one kernel.

The reference runs each line of its formula as its own kernel, and each writes a
temporary the size of x to GPU memory and reads it back: about ten passes over memory
forward and fifteen backward, for an op whose arithmetic costs nothing beside them. Here
the forward reads x and writes y, the backward reads x and dy and writes dx (`backend.fuse`
compiles each formula into one CUDA kernel; the erf, or the tanh, is recomputed in the
backward, which costs arithmetic, not memory).
"""

from ... import backend
from ...function import register_kernel
from . import FUSED_DTYPES
from ...ops.fused import GELU_TANH_A, INV_SQRT_2, INV_SQRT_2PI, SQRT_2_OVER_PI, GeluOp


def _exact(xp, x):
    return 0.5 * x * (1.0 + backend.erf(x * INV_SQRT_2))


def _exact_grad(xp, x, dy):
    cdf = 0.5 * (1.0 + backend.erf(x * INV_SQRT_2))              # Phi(x)
    pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI                    # phi(x)
    return dy * (cdf + x * pdf)


def _tanh(xp, x):
    t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x * x * x))
    return 0.5 * x * (1.0 + t)


def _tanh_grad(xp, x, dy):
    t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x * x * x))
    du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_A * x * x)      # du/dx
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


GPU_FUNCTIONS = {"none": (backend.fuse(_exact, "gelu_exact"),
                    backend.fuse(_exact_grad, "gelu_exact_grad")),
           "tanh": (backend.fuse(_tanh, "gelu_tanh"), backend.fuse(_tanh_grad, "gelu_tanh_grad"))}


@register_kernel("gelu", devices=("cuda",), dtypes=FUSED_DTYPES)
class GeluFusedOp(GeluOp):
    """gelu on a GPU, one fused kernel each way (equals ops/fused.py's GeluOp). Saves x."""

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.approximate = approximate
        ctx.save(x)
        return GPU_FUNCTIONS[approximate][0](x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        return (GPU_FUNCTIONS[ctx.approximate][1](x, dy),)
