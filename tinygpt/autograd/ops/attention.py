"""Causal multi-head self-attention straight from the fused qkv projection (floor 2).

`scaled_dot_product_attention` (ops/nn.py) takes q, k, v as (B, H, T, hs) tensors; a GPT
gets them from one (B, T, 3C) projection and wants the result back as (B, T, C). Doing
that with primitives costs a split (three zero-filled gradients in backward), two
permutes and a transpose copy. This op reads q, k and v as strided views of qkv and
writes its output straight into (B, T, C); backward recomputes the attention weights
from q, k and each row's log-sum-exp, so no T x T array outlives a block.

It also works in blocks of a few sequences at a time: the (g, H, T, T) scores of a block
stay in cache through the scale, mask, softmax and dropout passes, where a whole-batch
computation would stream a (B, H, T, T) array through memory once per pass.
"""

from .. import backend
from ..function import Function, register
from .nn import _random_dtype, causal_mask

# Bytes of (g, H, T, T) scores per block: about the size of a core's L2 cache.
BLOCK_BYTES = 1 << 20
QUERY_BLOCK = 64            # query rows per tile


def _views(x, n_head):
    """q, k, v as (B, H, T, hs) strided views of x (B, T, 3C)."""
    B, T, C3 = x.shape
    hs = C3 // (3 * n_head)
    x5 = x.reshape(B, T, 3, n_head, hs)
    return tuple(x5[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def _tiles(xp, B, H, T, itemsize):
    """Batch blocks, each with its query blocks: [(batch slice, [query slices])].

    A batch block holds about BLOCK_BYTES of (T, T) scores; its query rows are cut into
    blocks of QUERY_BLOCK rows, and rows a:b attend to keys 0:b only, so the blocked
    upper triangle is skipped (about 3/8 of the work at T = 256). A GPU gets one tile:
    one large kernel beats many small ones."""
    if xp.__name__ != "numpy":
        return [(slice(0, B), [slice(0, T)])]
    g = max(1, BLOCK_BYTES // max(1, H * T * T * itemsize))
    rows = [slice(a, min(a + QUERY_BLOCK, T)) for a in range(0, T, QUERY_BLOCK)]
    return [(slice(b, min(b + g, B)), rows) for b in range(0, B, g)]


@register("self_attention")
class SelfAttention(Function):
    """Causal self-attention of the (B, T, 3C) output of a fused qkv projection.

    q, k, v = qkv split in three along the last axis, each viewed as (B, H, T, hs);
    S = q k^T * scale with keys after the query blocked, P = softmax(S) over keys,
    A = P * D (D: dropout mask scaled by 1/(1-p), or 1), y = A v, returned as (B, T, C)
    with the heads side by side. The same function as
    `scaled_dot_product_attention(q, k, v, is_causal=True)` followed by
    `.transpose(1, 2).reshape(B, T, C)`.

    Backward, per block, with dy viewed as (B, H, T, hs), P recomputed from q, k and
    the saved log-sum-exp of each row (as flash attention does, so no (B, H, T, T) array
    outlives the forward):
        dv = A^T dy,  dA = dy v^T,  dP = dA * D,
        dS = P * (dP - sum(dP * P, over keys)) * scale,
        dq = dS k,  dk = dS^T q,  written into the matching thirds of dqkv.
    Saves qkv, the log-sum-exp of each score row (B, H, T, 1) and the dropout mask.
    """

    @staticmethod
    def forward(ctx, qkv, n_head, dropout_p, scale):
        xp = backend.array_module(qkv)
        B, T, C3 = qkv.shape
        if C3 % (3 * n_head):
            raise ValueError(
                f"self_attention: the last dimension of qkv ({C3}) must be 3 * n_embd with "
                f"n_embd divisible by n_head ({n_head})")
        C = C3 // 3
        q, k, v = _views(qkv, n_head)
        y = xp.empty((B, T, C), dtype=qkv.dtype)
        y4 = y.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)   # (B, H, T, hs)
        lse = xp.empty((B, n_head, T, 1), dtype=qkv.dtype)                # log-sum-exp rows
        keep_all = xp.empty((B, n_head, T, T), dtype=bool) if dropout_p > 0 else None
        drop_scale = qkv.dtype.type(1.0 / (1.0 - dropout_p))
        gen = backend.generator(backend.device_of(qkv)) if dropout_p > 0 else None
        for sl, rows in ((sl, r) for sl, blocks in _tiles(xp, B, n_head, T, qkv.dtype.itemsize)
                         for r in blocks):
            keys = slice(0, rows.stop)                                 # keys 0..b-1
            e = _scores(xp, q[sl, :, rows], k[sl, :, keys], scale, rows)  # S, (g, H, r, b)
            # Row max is finite: every query sees at least itself.
            row_max = e.max(axis=-1, keepdims=True)
            e -= row_max
            xp.exp(e, out=e)                                           # E = P * total
            total = e.sum(axis=-1, keepdims=True)
            if gen is not None:
                keep = keep_all[sl, :, rows, keys]
                xp.greater_equal(gen.random(e.shape, dtype=_random_dtype(e.dtype)),
                                 dropout_p, out=keep)
                e *= keep
            # y = P v = (E v) / total: dividing the (r, hs) result is cheaper than the
            # (r, b) weights, and the dropout scale rides along.
            out = y4[sl, :, rows]
            xp.matmul(e, v[sl, :, keys], out=out)
            out *= (drop_scale / total) if gen is not None else 1 / total
            xp.log(total, out=total)
            xp.add(total, row_max, out=lse[sl, :, rows])
        ctx.save(qkv, lse, keep_all)
        ctx.n_head, ctx.scale, ctx.drop_scale = n_head, scale, drop_scale
        return y

    @staticmethod
    def backward(ctx, dy):
        qkv, lse, keep_all = ctx.saved
        xp = backend.array_module(dy)
        B, T, C = dy.shape
        H = ctx.n_head
        q, k, v = _views(qkv, H)
        dqkv = xp.empty_like(qkv)
        dq, dk, dv = _views(dqkv, H)
        dy4 = dy.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)           # (B, H, T, hs)
        scale = dy.dtype.type(ctx.scale)
        for sl, blocks in _tiles(xp, B, H, T, dy.dtype.itemsize):
            # dk and dv collect a contribution from every query block: sum them in
            # contiguous buffers, then write each once into its third of dqkv.
            dk_sum = xp.zeros(k[sl].shape, dtype=dy.dtype)
            dv_sum = xp.zeros(v[sl].shape, dtype=dy.dtype)
            for rows in blocks:
                keys = slice(0, rows.stop)
                qb, kb, vb = q[sl, :, rows], k[sl, :, keys], v[sl, :, keys]
                dyb = dy4[sl, :, rows]
                # Recompute P = exp(S - logsumexp) instead of keeping (B, H, T, T).
                p = _scores(xp, qb, kb, ctx.scale, rows)
                p -= lse[sl, :, rows]
                xp.exp(p, out=p)                                       # P (0 where blocked)
                if keep_all is not None:
                    keep = keep_all[sl, :, rows, keys]
                    a = p * keep
                    a *= ctx.drop_scale
                else:
                    a = p
                dv_sum[:, :, keys] += xp.matmul(a.swapaxes(-1, -2), dyb)
                dp = xp.matmul(dyb, vb.swapaxes(-1, -2))               # dA, (g, H, r, b)
                if keep_all is not None:
                    dp *= keep
                    dp *= ctx.drop_scale
                # dS = P * (dP - sum(dP * P)) * scale; the scale is applied to dq and dk,
                # which are (r, hs) and (b, hs) per head instead of (r, b).
                dp -= xp.einsum("...ij,...ij->...i", dp, p)[..., None]
                dp *= p
                out = dq[sl, :, rows]
                xp.matmul(dp, kb, out=out)
                out *= scale
                dk_sum[:, :, keys] += xp.matmul(dp.swapaxes(-1, -2), qb)
            dk_sum *= scale
            dk[sl] = dk_sum
            dv[sl] = dv_sum
        return (dqkv,)


def _scores(xp, q, k, scale, rows):
    """S = q k^T * scale for query rows `rows` (a slice of 0..T-1) against keys
    0..rows.stop-1, with the keys after each query set to -inf: (g, H, r, b)."""
    s = xp.matmul(q * q.dtype.type(scale), k.swapaxes(-1, -2))   # scaling q: r x hs, not r x b
    t = rows.stop
    xp.copyto(s, xp.asarray(-xp.inf, dtype=s.dtype), where=causal_mask(xp, t, t)[rows])
    return s
