"""Fast CPU kernel of `gelu` (floor 2): ops/fused.py's GeluOp with in-place ufuncs, block by
block on tinygpt's threads, and two rearrangements that save passes over memory:

- the tanh form's forward as y = x / (1 + exp(-2u)), equal to 0.5 x (1 + tanh(u)): one exp
  where NumPy's float32 tanh costs more, with fewer cheap passes around it;
- both backwards read Phi(x) (for the tanh form s = (1 + tanh(u)) / 2) off the saved output
  as y / x instead of evaluating erf (a rational function of some 25 passes) or tanh again.
  The output is the next layer's input, which that layer keeps anyway, so saving it costs
  no memory.
"""

import numpy as np

from .. import backend
from ..function import register_kernel
from ..ops.fused import GELU_TANH_A, INV_SQRT_2, INV_SQRT_2PI, SQRT_2_OVER_PI, GeluOp
from .threads import CPU_DTYPES, as_rows, for_blocks


def _gelu_tanh(xp, x, y):
    """y = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3),
    with no temporaries. Where -2u overflows exp, y = x / inf = -0, the limit (x is
    negative there)."""
    c = SQRT_2_OVER_PI
    xp.multiply(x, x, out=y)
    y *= -2.0 * GELU_TANH_A * c
    y -= 2.0 * c
    y *= x                                                      # -2u
    with np.errstate(over="ignore"):
        xp.exp(y, out=y)
    y += 1
    xp.divide(x, y, out=y)


# Where x * x is below these (|x| under 1e-150 in float64, 1e-18 in float32, ~3e-4 in
# float16), Phi(x) = 1/2 + x / sqrt(2 pi) rounds to 1/2; above them y = x * Phi(x) is a
# normal number, so y / x is exact to the last bit or two.
_TINY2 = {"d": 1e-300, "f": np.float32(1e-36), "e": np.float16(1e-7)}


def _phi_from_output(xp, x, y, out):
    """out = y / x = Phi(x) (for the tanh form, (1 + tanh(u)) / 2), and 1/2 where
    x * x < _TINY2 (there Phi(x) = 1/2 to the last bit, and y / x would lose bits to
    subnormals or be 0 / 0). Returns x * x, which every GELU gradient needs next."""
    x2 = x * x
    small = x2 < _TINY2[x.dtype.char]
    with np.errstate(divide="ignore", invalid="ignore"):
        xp.divide(y, x, out=out)
    xp.copyto(out, x.dtype.type(0.5), where=small)
    return x2


def _gelu_tanh_grad(xp, x, y, dy, dx):
    """dx = dy * (s + 4 w s (1 - s)),  s = (1 + t) / 2 = y / x,  t = tanh(u),
    w = 0.5 x sqrt(2/pi) (1 + 3 * 0.044715 x^2), since 0.5 (1 + t) = s and
    0.5 (1 - t^2) = 2 s (1 - s). Where s is near 1 (x above ~2), 1 - s carries the
    rounding of y (an ulp of 1) times 4w: in float32 dx is within 3.4e-6 of float64's
    over x in [-12, 12] (recomputing t: 1.2e-6)."""
    g = _phi_from_output(xp, x, y, dx)                          # dx = s, g = x^2
    g *= 6.0 * GELU_TANH_A * SQRT_2_OVER_PI
    g += 2.0 * SQRT_2_OVER_PI
    g *= x                                                      # 4w
    one_minus_s = xp.subtract(1, dx)
    one_minus_s *= g
    one_minus_s += 1
    dx *= one_minus_s                                           # s (1 + 4w (1 - s))
    dx *= dy


def _gelu_exact(xp, x, y):
    """y = 0.5 x (1 + erf(x / sqrt 2))."""
    backend.erf(x * INV_SQRT_2, out=y)
    y += 1
    y *= x
    y *= 0.5


def _gelu_exact_grad(xp, x, y, dy, dx):
    """dx = dy * (Phi(x) + x phi(x)),  Phi(x) = y / x,  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    g = _phi_from_output(xp, x, y, dx)                          # dx = Phi(x), g = x^2
    g *= -0.5
    xp.exp(g, out=g)
    g *= x
    g *= INV_SQRT_2PI
    dx += g
    dx *= dy


@register_kernel("gelu", dtypes=CPU_DTYPES)
class GeluBlockedOp(GeluOp):
    """gelu on the CPU in blocks, Phi read off the output (equals ops/fused.py's GeluOp).
    Saves x and y."""

    @staticmethod
    def forward(ctx, x, approximate):
        xp = backend.array_module(x)
        ctx.approximate = approximate
        row_fn = _gelu_tanh if approximate == "tanh" else _gelu_exact
        y = xp.empty_like(x)
        x2, y2 = as_rows(x), as_rows(y)
        for_blocks(lambda r: row_fn(xp, x2[r], y2[r]), x2)
        ctx.save(x, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved
        xp = backend.array_module(x)
        row_fn = _gelu_tanh_grad if ctx.approximate == "tanh" else _gelu_exact_grad
        dx = xp.empty_like(x)
        x2, y2, dy2, dx2 = as_rows(x), as_rows(y), as_rows(dy), as_rows(dx)
        for_blocks(lambda r: row_fn(xp, x2[r], y2[r], dy2[r], dx2[r]), x2)
        return (dx,)
