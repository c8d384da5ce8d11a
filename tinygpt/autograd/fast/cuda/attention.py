"""Fused GPU kernels of `self_attention` and `scaled_dot_product_attention` (floor 2):
ops/attention.py's ops with the masked softmax in three fused kernels and no T x S array
kept for backward.

The reference builds the causal mask, masks the scores, takes the row max, checks it,
shifts, exps, sums, checks the sum and divides: a kernel and a (B, H, T, T) temporary per
step, and it keeps P until backward. Here the scores S = q k^T come from one batched
product (cuBLAS), and three kernels read them:

    m = row max of the allowed S * scale                     (a reduction)
    l = log of the row sum of exp(S * scale - m') over the allowed keys, m' = m where
        finite (a row with every key blocked has m = -inf), else 0      (a reduction)
    P = exp(S * scale - (m' + l)) where allowed, 0 where blocked          (elementwise)

Which keys a query may see is computed inside each kernel from small index arrays, query
i against key j: blocked when j > i, when j <= i - window (a banded layer), or when key j
is padding; no mask array is built. Forward keeps qkv (kept for backward anyway), each
row's log-sum-exp lse = m' + l (B, H, T) and the dropout mask; backward recomputes S with
one more product and P from it in one kernel (as flash attention does), so the T x T
arrays live only while one layer's forward or backward runs:

    dv = A^T dy,  dA = dy v^T,  dP = dA * D,
    dS = P * (dP - rowsum(dP * P)) * scale      (a reduction, then one kernel)
    dq = dS k,  dk = dS^T q,  written into the thirds of dqkv (B, T, 3C).

`scaled_dot_product_attention` (generation's attention over the KV cache) runs the same
three kernels over its (..., T, S) scores, its boolean mask (True = may attend) or
additive float mask passed to them as they are, and is_causal as key j > query i.
"""

import numpy as np

from ... import backend
from ...function import register_kernel
from ...ops.attention import ScaledDotProductAttentionOp, SelfAttentionOp, check_qkv, split_heads
from ...ops.fused import bernoulli_keep
from . import FUSED_DTYPES


def _blocked(row, col, window, padded):
    """Key `col` blocked for query `row`: in the future, left of the band, or padding."""
    return (col > row) | (col <= row - window) | padded


def _row_max(xp, s, scale, row, col, window, padded):
    return xp.amax(xp.where(_blocked(row, col, window, padded), -np.inf, s * scale), axis=3)


def _log_sum_exp(xp, s, scale, shift, row, col, window, padded):
    e = xp.where(_blocked(row, col, window, padded), 0.0, xp.exp(s * scale - shift))
    return xp.log(xp.sum(e, axis=3))


def _probabilities(xp, s, scale, lse, row, col, window, padded):
    return xp.where(_blocked(row, col, window, padded), 0.0, xp.exp(s * scale - lse))


def _finite_or_zero(xp, m):
    return xp.where(xp.isfinite(m), m, 0.0)


def _row_dot(xp, dp, p):
    return xp.sum(dp * p, axis=-1)


def _scores_grad(xp, p, dp, dot, scale):
    return p * (dp - dot) * scale


def _masked_scores(s, scale, bias, row, col, offset, disallowed):
    """(blocked, S * scale + bias) of scaled_dot_product_attention: keys past the query
    when causal (offset 0; offset S: never), keys the boolean mask disallows."""
    return (col > row + offset) | disallowed, s * scale + bias


def _sdpa_row_max(xp, s, scale, bias, row, col, offset, disallowed):
    blocked, scores = _masked_scores(s, scale, bias, row, col, offset, disallowed)
    return xp.amax(xp.where(blocked, -np.inf, scores), axis=-1)


def _sdpa_log_sum_exp(xp, s, scale, bias, shift, row, col, offset, disallowed):
    blocked, scores = _masked_scores(s, scale, bias, row, col, offset, disallowed)
    return xp.log(xp.sum(xp.where(blocked, 0.0, xp.exp(scores - shift)), axis=-1))


def _sdpa_probabilities(xp, s, scale, bias, lse, row, col, offset, disallowed):
    blocked, scores = _masked_scores(s, scale, bias, row, col, offset, disallowed)
    return xp.where(blocked, 0.0, xp.exp(scores - lse))


ROW_MAX = backend.fuse(_row_max, "attention_row_max")
LOG_SUM_EXP = backend.fuse(_log_sum_exp, "attention_log_sum_exp")
PROBABILITIES = backend.fuse(_probabilities, "attention_probabilities")
FINITE_OR_ZERO = backend.fuse(_finite_or_zero, "attention_finite_or_zero")
ROW_DOT = backend.fuse(_row_dot, "attention_row_dot")
SCORES_GRAD = backend.fuse(_scores_grad, "attention_scores_grad")
SDPA_ROW_MAX = backend.fuse(_sdpa_row_max, "sdpa_row_max")
SDPA_LOG_SUM_EXP = backend.fuse(_sdpa_log_sum_exp, "sdpa_log_sum_exp")
SDPA_PROBABILITIES = backend.fuse(_sdpa_probabilities, "sdpa_probabilities")


def _masks(xp, T, key_mask, window):
    """The kernels' mask arguments: query and key indices (T, 1) and (1, T), the band
    width (T + 1: no band), and the padding as (B, 1, 1, T) booleans (or False)."""
    row = xp.arange(T).reshape(T, 1)
    col = xp.arange(T).reshape(1, T)
    padded = ~key_mask[0][:, None, None, :] if key_mask else False
    return row, col, T + 1 if window is None else int(window), padded


@register_kernel("self_attention", devices=("cuda",), dtypes=FUSED_DTYPES)
class SelfAttentionFusedOp(SelfAttentionOp):
    """self_attention on a GPU: the masked softmax in three fused kernels, P recomputed
    in backward (equals ops/attention.py's SelfAttentionOp). Saves qkv, each row's
    log-sum-exp (B, H, T), the mask arguments and the dropout mask."""

    @staticmethod
    def forward(ctx, qkv, *key_mask, n_head, dropout_p, scale, window=None):
        xp = backend.array_module(qkv)
        B, T, C3 = qkv.shape
        check_qkv(C3, n_head)
        q, k, v = split_heads(qkv, n_head)                           # (B, H, T, hs) each
        s = q @ k.swapaxes(-1, -2)                                   # (B, H, T, T)
        masks = _masks(xp, T, key_mask, window)
        shift = FINITE_OR_ZERO(ROW_MAX(s, scale, *masks))[..., None]           # m'
        lse = shift + LOG_SUM_EXP(s, scale, shift, *masks)[..., None]         # (B, H, T, 1)
        p = PROBABILITIES(s, scale, lse, *masks)                     # P
        del s
        keep = bernoulli_keep(p.shape, dropout_p, p) if dropout_p > 0 else None
        a = p if keep is None else p * keep * p.dtype.type(1.0 / (1.0 - dropout_p))   # A
        y = a @ v                                                    # (B, H, T, hs)
        ctx.save(qkv, lse, keep)
        ctx.masks, ctx.n_head, ctx.scale, ctx.dropout_p = masks, n_head, scale, dropout_p
        return y.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)      # heads side by side

    @staticmethod
    def backward(ctx, dy):
        qkv, lse, keep = ctx.saved
        xp = backend.array_module(dy)
        B, T, C = dy.shape
        H = ctx.n_head
        q, k, v = split_heads(qkv, H)
        dy4 = dy.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)    # (B, H, T, hs)
        p = PROBABILITIES(q @ k.swapaxes(-1, -2), ctx.scale, lse, *ctx.masks)   # P again
        drop = None if keep is None else keep * p.dtype.type(1.0 / (1.0 - ctx.dropout_p))
        a = p if drop is None else p * drop                          # A
        dqkv = xp.empty((B, T, 3 * C), dtype=dy.dtype)
        dq, dk, dv = split_heads(dqkv, H)                            # views into dqkv
        dv[...] = a.swapaxes(-1, -2) @ dy4                           # A^T dy
        del a
        dp = dy4 @ v.swapaxes(-1, -2)                                # dA
        if drop is not None:
            dp = dp * drop                                           # dP
        ds = SCORES_GRAD(p, dp, ROW_DOT(dp, p)[..., None], ctx.scale)   # dS
        dq[...] = ds @ k
        dk[...] = ds.swapaxes(-1, -2) @ q
        return (dqkv,) + (None,) * (len(ctx.needs_grad) - 1)


@register_kernel("scaled_dot_product_attention", devices=("cuda",), dtypes=FUSED_DTYPES)
class ScaledDotProductAttentionFusedOp(ScaledDotProductAttentionOp):
    """scaled_dot_product_attention on a GPU: the masked softmax in three fused kernels,
    P recomputed in backward (equals ops/attention.py's ScaledDotProductAttentionOp). Saves
    q, k, v, each row's log-sum-exp, the mask arguments and the dropout mask."""

    @staticmethod
    def forward(ctx, q, k, v, *mask, is_causal, dropout_p, scale):
        xp = backend.array_module(q)
        T, S = q.shape[-2], k.shape[-2]
        s = q @ k.swapaxes(-1, -2)                                   # (..., T, S)
        bias, disallowed = 0.0, False
        if mask:
            (m,) = mask
            if m.dtype == bool:
                disallowed = ~m
            else:
                bias = m
        masks = (bias, xp.arange(T).reshape(T, 1), xp.arange(S).reshape(1, S),
                 0 if is_causal else S, disallowed)
        shift = FINITE_OR_ZERO(SDPA_ROW_MAX(s, scale, *masks))[..., None]
        lse = shift + SDPA_LOG_SUM_EXP(s, scale, masks[0], shift, *masks[1:])[..., None]
        p = SDPA_PROBABILITIES(s, scale, masks[0], lse, *masks[1:])  # P
        del s
        keep = bernoulli_keep(p.shape, dropout_p, p) if dropout_p > 0 else None
        a = p if keep is None else p * keep * p.dtype.type(1.0 / (1.0 - dropout_p))   # A
        ctx.save(q, k, v, lse, keep)
        ctx.masks, ctx.scale, ctx.dropout_p = masks, scale, dropout_p
        return a @ v                                                 # (..., T, hv)

    @staticmethod
    def backward(ctx, dy):
        q, k, v, lse, keep = ctx.saved
        need = ctx.needs_grad
        masks = ctx.masks
        p = SDPA_PROBABILITIES(q @ k.swapaxes(-1, -2), ctx.scale, masks[0], lse, *masks[1:])
        drop = None if keep is None else keep * p.dtype.type(1.0 / (1.0 - ctx.dropout_p))
        a = p if drop is None else p * drop                          # A
        dv = a.swapaxes(-1, -2) @ dy if need[2] else None            # A^T dy
        dp = dy @ v.swapaxes(-1, -2)                                 # dA
        if drop is not None:
            dp = dp * drop                                           # dP
        ds = SCORES_GRAD(p, dp, ROW_DOT(dp, p)[..., None], ctx.scale)   # dS
        dq = ds @ k if need[0] else None
        dk = ds.swapaxes(-1, -2) @ q if need[1] else None
        return (dq, dk, dv) + (None,) * (len(need) - 3)
