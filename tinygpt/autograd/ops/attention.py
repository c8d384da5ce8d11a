"""Attention: softmax(q k^T * scale + mask) @ v, and causal self-attention straight from a
fused qkv projection (floor 2).

The reference implementations: the full T x S score matrix, masked, softmaxed (in float32
for float16 data), dropped out and multiplied by v, with the softmax backward written out. The CPU's fast kernel for
`self_attention` (`tinygpt/autograd/fast/attention.py`) computes the same function in
cache-sized tiles without keeping any T x T array; it is tested equal to the one here.

Shape letters: B batch, H heads, T query positions, S key positions, hs head size,
C = H * hs channels.
"""

from .. import backend
from ..function import Function, register
from .fused import bernoulli_keep, wide


def causal_blocked(xp, t, s, window=None):
    """Boolean (T, S) mask, True where attention is *blocked*: key j > query i (top-left
    aligned, as PyTorch's is_causal), and with a `window` W also j <= i - W, so that each
    query sees the W most recent positions, itself included."""
    blocked = xp.triu(xp.ones((t, s), dtype=bool), k=1)
    if window is not None:
        blocked |= xp.tril(xp.ones((t, s), dtype=bool), k=-window)
    return blocked


def softmax_over_keys(xp, scores, blocked):
    """P = softmax of scores (..., T, S) over its last axis, with the `blocked` entries
    (a boolean mask broadcastable to scores, or None) given weight 0. A row whose keys
    are all blocked gets weights 0, never NaN: its shift is 0 (not the max, -inf) and its
    sum is taken as 1."""
    if blocked is not None:
        scores = xp.where(blocked, -xp.inf, scores)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)   # all blocked: shift by 0
    e = xp.exp(scores - row_max)                            # exactly 0 where blocked
    total = e.sum(axis=-1, keepdims=True)
    return e / xp.where(total == 0, 1, total)


def softmax_backward(p, dp):
    """dS = P * (dP - sum(dP * P, over keys)): the softmax's backward along the last axis."""
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


@register("scaled_dot_product_attention")
class ScaledDotProductAttentionOp(Function):
    """out = dropout(softmax(q k^T * scale + mask)) @ v, per batch and head.

    q (B, H, T, hs), k (B, H, S, hs), v (B, H, S, hv) -> out (B, H, T, hv).
    The mask is a boolean (True = may attend, as PyTorch) or an additive float array
    broadcastable to (B, H, T, S); is_causal blocks keys after each query. A row whose
    keys are all blocked gets weights 0 (and output 0), never NaN.

    With S = q k^T * scale (+ mask), P = softmax(S), D the dropout mask scaled by
    1/(1-p), A = P * D:
        dv = A^T @ dy,  dA = dy @ v^T,  dP = dA * D,
        dS = P * (dP - sum(dP * P, over keys)) * scale,
        dq = dS @ k,  dk = dS^T @ q.
    Saves q, k, v, P and the dropout mask (P is (B, H, T, S): the one T^2 array).
    """

    @staticmethod
    def forward(ctx, q, k, v, *mask, is_causal, dropout_p, scale):
        xp = backend.array_module(q)
        scores = q @ k.swapaxes(-1, -2) * q.dtype.type(scale)     # S, (B, H, T, S)
        blocked = None
        if mask:
            (m,) = mask
            if m.dtype == bool:
                blocked = ~m
            else:
                scores = scores + m
        if is_causal:
            causal = causal_blocked(xp, q.shape[-2], k.shape[-2])
            blocked = causal if blocked is None else blocked | causal
        p = softmax_over_keys(xp, wide(scores), blocked)            # P
        keep = bernoulli_keep(p.shape, dropout_p, p) if dropout_p > 0 else None
        a = p if keep is None else p * keep * p.dtype.type(1.0 / (1.0 - dropout_p))   # A
        ctx.save(q, k, v, p, keep)
        ctx.scale, ctx.dropout_p = scale, dropout_p
        return a.astype(v.dtype, copy=False) @ v                    # (B, H, T, hv)

    @staticmethod
    def backward(ctx, dy):
        q, k, v, p, keep = ctx.saved
        need = ctx.needs_grad
        dt = p.dtype.type
        drop = None if keep is None else keep * dt(1.0 / (1.0 - ctx.dropout_p))   # D
        a = p if drop is None else p * drop
        dv = a.astype(dy.dtype, copy=False).swapaxes(-1, -2) @ dy if need[2] else None
        dp = wide(dy @ v.swapaxes(-1, -2))                          # dA
        if drop is not None:
            dp = dp * drop                                          # dP
        ds = (softmax_backward(p, dp) * dt(ctx.scale)).astype(dy.dtype, copy=False)   # dS
        dq = ds @ k if need[0] else None
        dk = ds.swapaxes(-1, -2) @ q if need[1] else None
        return (dq, dk, dv) + (None,) * (len(need) - 3)


def split_heads(qkv, n_head):
    """q, k, v as (B, H, T, hs) views of qkv (B, T, 3C): each C third, its heads apart."""
    B, T, C3 = qkv.shape
    x5 = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head))
    return tuple(x5[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


@register("self_attention")
class SelfAttentionOp(Function):
    """Causal self-attention of the (B, T, 3C) output of a fused qkv projection.

    q, k, v = qkv split in three along the last axis, each viewed as (B, H, T, hs);
    S = q k^T * scale with the keys after each query blocked, P = softmax(S) over keys,
    A = P * D (D: dropout mask scaled by 1/(1-p), or 1), y = A v, returned as (B, T, C)
    with the heads side by side: the same function as
    `scaled_dot_product_attention(q, k, v, is_causal=True)` followed by
    `.transpose(1, 2).reshape(B, T, C)`, without the split's and the merge's copies.
    Optionally a `window` W blocks the keys more than W - 1 positions before each query
    (a banded layer, as GPT-3's locally banded sparse attention), and a key mask
    (B, T) of booleans (False = padding) blocks padded keys in every row of its
    sequence; a query whose keys are all blocked gets output 0.

    Backward, with dy viewed as (B, H, T, hs):
        dv = A^T dy,  dA = dy v^T,  dP = dA * D,
        dS = P * (dP - sum(dP * P, over keys)) * scale,
        dq = dS k,  dk = dS^T q,  written into the matching thirds of dqkv (B, T, 3C).
    Saves qkv, P (B, H, T, T) and the dropout mask.
    """

    @staticmethod
    def forward(ctx, qkv, *key_mask, n_head, dropout_p, scale, window=None):
        xp = backend.array_module(qkv)
        B, T, C3 = qkv.shape
        check_qkv(C3, n_head)
        q, k, v = split_heads(qkv, n_head)                           # (B, H, T, hs) each
        scores = q @ k.swapaxes(-1, -2) * qkv.dtype.type(scale)     # S, (B, H, T, T)
        blocked = causal_blocked(xp, T, T, window)                   # (T, T)
        if key_mask:
            blocked = blocked | ~key_mask[0][:, None, None, :]       # (B, 1, T, T)
        p = softmax_over_keys(xp, wide(scores), blocked)             # P
        keep = bernoulli_keep(p.shape, dropout_p, p) if dropout_p > 0 else None
        a = p if keep is None else p * keep * p.dtype.type(1.0 / (1.0 - dropout_p))   # A
        y = a.astype(v.dtype, copy=False) @ v                        # (B, H, T, hs)
        ctx.save(qkv, p, keep)
        ctx.n_head, ctx.scale, ctx.dropout_p = n_head, scale, dropout_p
        return y.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)      # heads side by side

    @staticmethod
    def backward(ctx, dy):
        qkv, p, keep = ctx.saved
        xp = backend.array_module(dy)
        B, T, C = dy.shape
        H = ctx.n_head
        dt = p.dtype.type
        q, k, v = split_heads(qkv, H)
        dy4 = dy.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)    # (B, H, T, hs)
        drop = None if keep is None else keep * dt(1.0 / (1.0 - ctx.dropout_p))   # D
        a = p if drop is None else p * drop
        dqkv = xp.empty((B, T, 3 * C), dtype=dy.dtype)
        dq, dk, dv = split_heads(dqkv, H)                            # views into dqkv
        dv[...] = a.swapaxes(-1, -2) @ dy4                           # A^T dy
        dp = wide(dy4 @ v.swapaxes(-1, -2))                          # dA
        if drop is not None:
            dp = dp * drop                                           # dP
        ds = (softmax_backward(p, dp) * dt(ctx.scale)).astype(dy.dtype, copy=False)   # dS
        dq[...] = ds @ k
        dk[...] = ds.swapaxes(-1, -2) @ q
        return (dqkv,) + (None,) * (len(ctx.needs_grad) - 1)


def check_qkv(c3, n_head):
    """Raise a ValueError when qkv's last dimension is not 3 * n_embd, n_head dividing it."""
    if c3 % (3 * n_head):
        raise ValueError(
            f"self_attention: the last dimension of qkv ({c3}) must be 3 * n_embd with "
            f"n_embd divisible by n_head ({n_head})")

