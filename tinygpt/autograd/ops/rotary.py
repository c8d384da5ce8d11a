"""Rotary position embedding (RoPE, Su et al. 2021): each query and key is rotated by an
angle proportional to its position, so that q . k depends on the two positions only
through their difference (floor 2). Imports: autograd (`Function`, `register`), backend.

Pairing: GPT-NeoX's "rotate half", as Hugging Face's Llama and GPT-NeoX write it. The
channels i and i + hs/2 of a head (i < hs/2) form a pair, rotated by the angle
theta_i(p) = (p / scale) * base^(-2i / hs) at position p. (The original paper and GPT-J
pair neighbours 2i, 2i + 1 instead: the same function up to a permutation of the
channels, but not interchangeable with weights trained under the other convention.)

Shape letters: B batch, H heads, T positions, hs head size (even).
"""

from .. import backend
from ..function import Function, register


def rotary_angles(xp, positions, head_size, base, scale):
    """cos and sin (T, hs) of the angles at `positions` (T,), or (B, 1, T, hs) for
    positions (B, T), in float64: channel j and channel j + hs/2 share the angle
    (positions / scale) * base^(-2j / hs), j < hs/2 (inv_freq as GPT-NeoX's)."""
    half = head_size // 2
    inv_freq = 1.0 / base ** (xp.arange(half, dtype=xp.float64) * 2.0 / head_size)
    angles = (positions.astype(xp.float64) / scale)[..., None] * inv_freq   # (..., T, hs/2)
    angles = xp.concatenate([angles, angles], axis=-1)                       # (..., T, hs)
    if angles.ndim == 3:
        angles = angles[:, None]                            # (B, 1, T, hs): every head
    return xp.cos(angles), xp.sin(angles)


def rotate_half(xp, x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: x rotated by 90 degrees
    in each pair (i, i + hs/2)."""
    half = x.shape[-1] // 2
    return xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate_half_transposed(xp, x):
    """The transpose of `rotate_half`, (z1, z2) -> (z2, -z1): the rotation by -90 degrees."""
    half = x.shape[-1] // 2
    return xp.concatenate([x[..., half:], -x[..., :half]], axis=-1)


@register("rotary")
class RotaryOp(Function):
    """y = x * cos + rotate_half(x) * sin;  dx = dy * cos + rotate_half^T(dy * sin).

    x (B, H, T, hs), positions (T,) or (B, T) (a row's own positions, e.g. counted over
    its real tokens when it is left-padded); cos and sin (T, hs) or (B, 1, T, hs) hold
    the angle theta_i = (p / scale) * base^(-2i / hs) in channels i and i + hs/2, and
    rotate_half(x1, x2) = (-x2, x1) on the halves of the last axis: each pair
    (x_i, x_{i+hs/2}) is rotated by theta_i (GPT-NeoX's pairing).

    The rotation is linear and orthogonal, so its derivative is its transpose, the
    rotation by -theta:
        dx = dy * cos + rotate_half^T(dy * sin),  rotate_half^T(z1, z2) = (z2, -z1).
    No gradient flows to the positions. Saves cos and sin (not x).
    """

    @staticmethod
    def forward(ctx, x, positions, base, scale):
        xp = backend.array_module(x)
        cos, sin = rotary_angles(xp, positions, x.shape[-1], base, scale)
        cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
        ctx.save(cos, sin)
        return x * cos + rotate_half(xp, x) * sin

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved
        xp = backend.array_module(dy)
        return dy * cos + rotate_half_transposed(xp, dy * sin), None
