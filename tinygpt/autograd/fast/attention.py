"""Fast CPU kernel of `self_attention` (floor 2): ops/attention.py's SelfAttentionOp in
cache-sized tiles, flash-attention style, without any T x T array that outlives a tile.

Its output goes straight into (B, T, C) and its gradient straight into the three thirds of
(B, T, 3C); backward recomputes the attention weights from q, k and each row's
log-sum-exp instead of keeping P.

It works in blocks of a few sequences and query rows at a time: the scores of a block
stay in cache through the mask, exp and dropout passes, where a whole-batch computation
would stream a (B, H, T, T) array through memory once per pass; the batch blocks run
on several threads, each product on one BLAS thread. No product has a transposed right-hand
operand (NumPy's matmul runs those slower: k^T and v^T are copied once instead), and each
per-row shift rides inside a product as one extra column (see `SelfAttentionTiledOp`)
instead of costing a pass of its own.
"""

import numpy as np

from .. import backend
from ..function import register_kernel
from ..ops.attention import SelfAttentionOp, check_qkv, split_heads
from ..ops.fused import bernoulli_keep
from . import blas, threads
from .threads import CPU_DTYPES

# Bytes of (g, H, T, T) scores per block: about the size of a core's L2 cache.
BLOCK_BYTES = 1 << 20
QUERY_BLOCK = 64            # query rows per tile


def _heads(x, n_head):
    """x (B, T, C) as a (B, H, T, hs) strided view."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def _tiles(xp, B, H, T, hs, itemsize):
    """Batch blocks, each with its query blocks: [(batch slice, [query slices])], and
    whether to run the batch blocks on several threads.

    A batch block holds about BLOCK_BYTES of (T, T) scores; its query rows are cut into
    blocks of QUERY_BLOCK rows, and rows a:b attend to keys 0:b only, so the blocked
    upper triangle is skipped (about 3/8 of the work at T = 256). The batch blocks run on
    `threads.parallel_map`'s threads, at least one block per thread, and each product on
    one BLAS thread (parallel_map sees to that): a 64-row product is too small for BLAS
    to split over its threads with profit (docs/performance.md). Where BLAS's thread
    count cannot be set (`blas.can_limit_blas_threads`), only products below
    SERIAL_BLAS_MACS multiply-adds, which BLAS keeps on the calling thread anyway, run
    blocks on several threads; larger ones get BLAS's threads one block at a time, as
    two blocks at once would only fight over them. A GPU gets one tile: one large kernel
    beats many small ones."""
    if xp.__name__ != "numpy":
        return [(slice(0, B), [slice(0, T)])], False
    g = max(1, BLOCK_BYTES // max(1, H * T * T * itemsize))
    parallel = (min(QUERY_BLOCK, T) * T * hs <= SERIAL_BLAS_MACS
                or blas.can_limit_blas_threads())
    if parallel:
        g = min(g, -(-B // threads.get_num_threads()))
    rows = [slice(a, min(a + QUERY_BLOCK, T)) for a in range(0, T, QUERY_BLOCK)]
    return [(slice(b, min(b + g, B)), rows) for b in range(0, B, g)], parallel


# OpenBLAS runs a product of at most 65536 * 4 multiply-adds on the calling thread (its
# GEMM_MULTITHREAD_THRESHOLD); NumPy ships OpenBLAS.
SERIAL_BLAS_MACS = 1 << 18


def _run_tiles(fn, tiles, parallel):
    return threads.parallel_map(fn, tiles) if parallel else [fn(tile) for tile in tiles]


def _augmented(xp, a, last, transpose=False, scale=None):
    """A contiguous copy of a (..., n, m) (times `scale` if given) with one more column
    holding `last`: [a | last]; with transpose, a^T with one more row: [a^T ; last]."""
    *lead, n, m = a.shape
    if transpose:
        out = xp.empty((*lead, m + 1, n), dtype=a.dtype)
        body, a = out[..., :m, :], a.swapaxes(-1, -2)
        out[..., m, :] = last
    else:
        out = xp.empty((*lead, n, m + 1), dtype=a.dtype)
        body = out[..., :m]
        out[..., m] = last
    if scale is None:
        body[...] = a
    else:
        xp.multiply(a, a.dtype.type(scale), out=body)
    return out


_masks = {}


def _key_range(rows, window):
    """The keys query rows a:b can see: 0:b, or with a window W only max(0, a - W + 1):b
    (the blocks left of the band are skipped, so a banded layer's cost grows with T * W)."""
    return slice(0 if window is None else max(0, rows.start - window + 1), rows.stop)


def _tile_mask(xp, rows, keys, window, dtype):
    """The (r, n) additive mask of query rows `rows` against keys `keys`: 0 where query i
    sees key j (j <= i, and i - j < W with a window), -inf elsewhere. It depends only on
    the offset of the rows within the keys and the sizes, so it is cached by those."""
    offset, r, n = rows.start - keys.start, rows.stop - rows.start, keys.stop - keys.start
    key = (xp.__name__, offset, r, n, window, dtype)
    mask = _masks.get(key)
    if mask is None:
        d = offset + xp.arange(r)[:, None] - xp.arange(n)[None, :]        # i - j
        seen = (d >= 0) if window is None else (d >= 0) & (d < window)
        mask = _masks[key] = xp.where(seen, 0, -xp.inf).astype(dtype)
    return mask


def _exp_scores(xp, qa, ka, rows, keys, window, key_bias, exact):
    """exp(S - shift) for query rows `rows` against keys `keys`: (g, H, r, n).

    qa[..., hs] holds minus each row's shift and ka[..., hs, :] is ones, so the product
    is S - shift already. Blocked keys (after the query, outside the window, padding in
    `key_bias` (g, T), 0 or -inf) get -inf and so weight 0; without a window only the
    diagonal block can hold any. With `exact` the row max of S - shift is moved into the
    shift first (written back into qa), so the largest term is exp(0) = 1; a row with every
    key blocked keeps its shift and gets all zeros."""
    e = xp.matmul(qa, ka[..., keys])
    if window is None:
        diagonal = slice(rows.start - keys.start, None)
        e[..., diagonal] += _tile_mask(xp, rows, slice(rows.start, rows.stop), None, e.dtype)
    else:
        e += _tile_mask(xp, rows, keys, window, e.dtype)
    if key_bias is not None:
        e += key_bias[:, None, None, keys]
    if exact:
        row_max = e.max(axis=-1, keepdims=True)
        if key_bias is not None:
            row_max[~xp.isfinite(row_max)] = 0
        e -= row_max
        qa[..., -1] -= row_max[..., 0]
    return xp.exp(e, out=e)


@register_kernel("self_attention", dtypes=CPU_DTYPES)
class SelfAttentionTiledOp(SelfAttentionOp):
    """self_attention on the CPU in tiles, P recomputed in backward (equals
    ops/attention.py's SelfAttentionOp).

    The softmax subtracts a shift m_i from each score row before exp; any m_i gives the
    same P. On the CPU m_i is the row's diagonal score S_ii (the query against itself,
    never blocked), which costs one dot product per row where the row max costs a slow
    reduction, and keeps every sum >= exp(0) = 1; a block with a row whose scores exceed
    S_ii by more than exp can hold is redone with the exact row maxima. The shift enters
    the product: [q * scale | -m] @ [k^T ; 1] = S - m. Forward keeps the log-sum-exp of
    each row, lse_i = m_i + log(sum_j exp(S_ij - m_i)); backward puts -lse in that column.

    Backward, per block, with dy viewed as (B, H, T, hs), P recomputed as
    exp([q * scale | -lse] @ [k^T ; 1]) (as flash attention does, so no (B, H, T, T)
    array outlives the forward):
        dv = A^T dy,  dA = dy v^T,  dP = dA * D,
        dS = P * (dP - rowsum(dP * P)) * scale,
        dq = dS k,  dk = dS^T q,  written into the matching thirds of dqkv,
    where rowsum(dP * P)_i = sum_j dA_ij A_ij = dy_i . y_i, one dot product per row of
    the output; without dropout it too rides in the product: [dy | -dy.y] @ [v^T ; 1].
    Saves qkv (its tensor is kept for backward anyway), each row's -lse, the output y and
    the dropout mask; both directions build the augmented operands one batch block at a
    time, so they stay in cache and no whole-batch copy is ever held.
    """

    @staticmethod
    def forward(ctx, qkv, *key_mask, n_head, dropout_p, scale, window=None):
        xp = backend.array_module(qkv)
        B, T, C3 = qkv.shape
        check_qkv(C3, n_head)
        C, dt = C3 // 3, qkv.dtype
        q, k, v = split_heads(qkv, n_head)
        y = xp.empty((B, T, C), dtype=dt)
        y4 = _heads(y, n_head)                                        # (B, H, T, hs)
        neg_lse = xp.empty((B, n_head, T), dtype=dt)
        ones = xp.ones(T, dtype=dt)
        # Padded keys as an additive bias (B, T): 0 where seen, -inf where padding.
        key_bias = xp.where(key_mask[0], 0, -xp.inf).astype(dt) if key_mask else None
        # The diagonal scores S_ii as the first shift on the CPU; a GPU takes the exact
        # row max at once (checking for overflow would cost a host-device sync).
        exact = backend.device_of(qkv) != "cpu"
        drop_scale = dt.type(1.0 / (1.0 - dropout_p))
        tiles, parallel = _tiles(xp, B, n_head, T, C // n_head, dt.itemsize)
        # The whole mask in one draw, before the tiles run on their threads: the reference's
        # draw, whatever the tiling.
        keep_all = bernoulli_keep((B, n_head, T, T), dropout_p, qkv) if dropout_p > 0 else None

        def tile(job):
            sl, blocks = job
            bias = None if key_bias is None else key_bias[sl]
            qa = _augmented(xp, q[sl], 0, scale=scale)               # [q * scale | -shift]
            if not exact:
                qa[..., -1] = -xp.einsum("...i,...i->...", qa[..., :-1], k[sl])
            ka = _augmented(xp, k[sl], 1, transpose=True)             # [k^T ; 1]
            for rows in blocks:
                keys = _key_range(rows, window)
                qb = qa[:, :, rows]
                # A query whose own key is padding has no diagonal score to shift by.
                sure = exact or (bias is not None and not xp.isfinite(bias[:, rows]).all())
                with np.errstate(over="ignore"):                      # checked next
                    e = _exp_scores(xp, qb, ka, rows, keys, window, bias, sure)
                total = xp.matmul(e, ones[keys])                      # (g, H, r)
                if not sure and not xp.isfinite(total).all():
                    e = _exp_scores(xp, qb, ka, rows, keys, window, bias, True)  # S_ij >> S_ii
                    total = xp.matmul(e, ones[keys])
                if bias is not None:
                    total[total == 0] = 1                             # every key blocked: y = 0
                if keep_all is not None:
                    e *= keep_all[sl, :, rows, keys]
                e *= ((drop_scale / total) if keep_all is not None else 1 / total)[..., None]
                xp.matmul(e, v[sl, :, keys], out=y4[sl, :, rows])     # A v
                xp.log(total, out=total)
                xp.subtract(qb[..., -1], total, out=neg_lse[sl, :, rows])   # -lse

        _run_tiles(tile, tiles, parallel)
        ctx.save(qkv, neg_lse, y, keep_all, key_bias)
        ctx.n_head, ctx.scale, ctx.drop_scale, ctx.window = n_head, scale, drop_scale, window
        return y

    @staticmethod
    def backward(ctx, dy):
        qkv, neg_lse, y, keep_all, key_bias = ctx.saved
        xp = backend.array_module(dy)
        B, T, C = dy.shape
        H = ctx.n_head
        hs = C // H
        dt = dy.dtype
        scale = dt.type(ctx.scale)
        q, k, v = split_heads(qkv, H)
        dqkv = xp.empty((B, T, 3 * C), dtype=dt)
        dq, dk, dv = split_heads(dqkv, H)
        dy4, y4 = _heads(dy, H), _heads(y, H)
        tiles, parallel = _tiles(xp, B, H, T, hs, dt.itemsize)

        def tile(job):
            sl, blocks = job
            bias = None if key_bias is None else key_bias[sl]
            # rowsum(dP * P) = dy . y per row and head, (g, H, T).
            rowdot = xp.einsum("...i,...i->...", dy4[sl], y4[sl])
            qa = _augmented(xp, q[sl], neg_lse[sl], scale=scale)      # [q * scale | -lse]
            qs = qa[..., :-1]
            ka = _augmented(xp, k[sl], 1, transpose=True)             # [k^T ; 1]
            dya = _augmented(xp, dy4[sl], 0 if keep_all is not None else -rowdot)
            va = _augmented(xp, v[sl], 1, transpose=True)             # [v^T ; 1]
            ks = k[sl] * scale
            # dk and dv collect a contribution from every query block: sum them in
            # contiguous buffers, then write each once into its third of dqkv. One
            # query block writes them there directly.
            if len(blocks) == 1:
                dk_sum, dv_sum = dk[sl], dv[sl]
            else:
                dk_sum = xp.zeros(ks.shape, dtype=dt)
                dv_sum = xp.zeros(ks.shape, dtype=dt)
            for rows in blocks:
                keys = _key_range(rows, ctx.window)
                a = p = _exp_scores(xp, qa[:, :, rows], ka, rows, keys, ctx.window, bias,
                                    False)                             # P
                ds = xp.matmul(dya[:, :, rows], va[..., keys])         # dA (- dy.y)
                if keep_all is not None:
                    keep = keep_all[sl, :, rows, keys]
                    a = p * keep
                    a *= ctx.drop_scale
                    ds *= keep
                    ds *= ctx.drop_scale                               # dP
                    ds -= rowdot[:, :, rows, None]
                ds *= p                                                # dS / scale
                xp.matmul(ds, ks[:, :, keys], out=dq[sl, :, rows])
                if len(blocks) == 1:
                    xp.matmul(a.swapaxes(-1, -2), dy4[sl], out=dv_sum)
                    xp.matmul(ds.swapaxes(-1, -2), qs, out=dk_sum)
                else:
                    dv_sum[:, :, keys] += xp.matmul(a.swapaxes(-1, -2), dy4[sl, :, rows])
                    dk_sum[:, :, keys] += xp.matmul(ds.swapaxes(-1, -2), qs[:, :, rows])
            if len(blocks) > 1:
                dk[sl] = dk_sum
                dv[sl] = dv_sum

        _run_tiles(tile, tiles, parallel)
        return (dqkv,) + (None,) * (len(ctx.needs_grad) - 1)
