"""Fused layer ops with hand-derived backward passes (floor 2).

Each could be written as a chain of primitives (and is, in `tests/composed.py`, as the
oracle the tests compare against); fused, it saves fewer arrays, runs fewer passes over
memory and states its whole gradient in one formula. Shape letters: B batch, T and S
sequence lengths, C channels, H heads, hs head size, V vocabulary, N rows.
"""

import math

import numpy as np

from .. import backend
from ..function import Function, register


@register("linear")
class Linear(Function):
    """y = x @ W^T + b, with W of shape (out, in) as PyTorch's `Linear`.

    dx = dy @ W,  dW = dy^T @ x,  db = dy summed over all leading axes. The leading axes
    of x are flattened first so BLAS sees one (N, in) @ (in, out) product; on the CPU
    large products are shared out over tinygpt's threads (`backend.matmuls`).
    """

    @staticmethod
    @backend.blas_on_tinygpt_threads
    def forward(ctx, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} has {x.shape[-1]} features but the weight "
                f"of shape {weight.shape} expects {weight.shape[1]}")
        x2 = x.reshape(-1, x.shape[-1])                    # (N, in)
        y = backend.matmul(x2, weight.T, add=bias)         # (N, out)
        ctx.save(x2, weight)
        ctx.lead = x.shape[:-1]
        return y.reshape(ctx.lead + (weight.shape[0],))

    @staticmethod
    @backend.blas_on_tinygpt_threads
    def backward(ctx, dy):
        x2, weight = ctx.saved
        dy2 = dy.reshape(-1, dy.shape[-1])                 # (N, out)
        need = ctx.needs_grad
        products = ([(dy2, weight)] if need[0] else []) + ([(dy2.T, x2)] if need[1] else [])
        results = iter(backend.matmuls(products))               # dx and dW together
        dx = next(results).reshape(ctx.lead + (weight.shape[1],)) if need[0] else None
        dw = next(results) if need[1] else None
        db = _column_sums(dy2) if len(need) > 2 and need[2] else None
        return dx, dw, db


def _column_sums(a):
    """a (N, M) summed over its rows as a product with ones, which BLAS runs 2-3x as fast
    as `a.sum(axis=0)` (and with a smaller rounding error, measured on GPT shapes). From
    SPLIT_SUM_ELEMENTS up, row blocks are summed on tinygpt's threads, one BLAS thread
    each (see `backend.matmul`), and their sums added."""
    xp = backend.array_module(a)
    ones = xp.ones(a.shape[0], dtype=a.dtype)
    if a.size < SPLIT_SUM_ELEMENTS or backend.device_of(a) != "cpu":
        return ones @ a
    threads = backend.get_num_threads()
    rows = -(-a.shape[0] // threads)
    parts = backend.parallel_map(lambda sl: ones[sl] @ a[sl],
                                 [slice(i, i + rows) for i in range(0, a.shape[0], rows)])
    return sum(parts[1:], parts[0])


SPLIT_SUM_ELEMENTS = 1 << 20


@register("softmax")
class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along `axis`;  dx = y * dy - y * sum(dy * y).

    Subtracting the max changes nothing mathematically and keeps exp from overflowing.
    Saves y only. Along the last axis both directions run row block by row block
    (`_by_row_blocks`), so each block's passes stay in cache and the blocks share the
    threads; along another axis, whole-array passes.
    """

    @staticmethod
    def forward(ctx, x, axis):
        xp = backend.array_module(x)
        ctx.axis = axis
        if axis == x.ndim - 1:
            y = _by_row_blocks(_softmax_rows, x)
        else:
            y = x - x.max(axis=axis, keepdims=True)
            xp.exp(y, out=y)
            y /= y.sum(axis=axis, keepdims=True)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis == y.ndim - 1:
            return (_by_row_blocks(_softmax_grad_rows, y, dy),)
        dx = dy * y
        dx -= y * dx.sum(axis=ctx.axis, keepdims=True)
        return (dx,)


def _by_row_blocks(kernel, x, *others):
    """out = kernel applied to x (and arrays of x's shape) along their last axis, one row
    block at a time on tinygpt's threads (backend.for_blocks): kernel(xp, out_rows,
    x_rows, *other_rows) writes its rows of out, a new array of x's shape and dtype."""
    xp = backend.array_module(x)
    x2, others2 = _rows(x), [_rows(a) for a in others]
    out = xp.empty(x2.shape, dtype=x.dtype)
    backend.for_blocks(lambda r: kernel(xp, out[r], x2[r], *(a[r] for a in others2)), x2)
    return out.reshape(x.shape)


def _shift_by_row_max(xp, x, out):
    """out = x - (the max of each row of x)."""
    xp.subtract(x, x.max(axis=1, keepdims=True), out=out)


def _softmax_rows(xp, y, x):
    _shift_by_row_max(xp, x, y)
    xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)


def _softmax_grad_rows(xp, dx, y, dy):
    xp.multiply(dy, y, out=dx)
    dx -= y * dx.sum(axis=1, keepdims=True)


def _log_softmax_rows(xp, y, x):
    _shift_by_row_max(xp, x, y)
    y -= xp.log(xp.exp(y).sum(axis=1, keepdims=True))


def _log_softmax_grad_rows(xp, dx, y, dy):
    xp.exp(y, out=dx)
    dx *= dy.sum(axis=1, keepdims=True)
    xp.subtract(dy, dx, out=dx)


@register("log_softmax")
class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along `axis`;  dx = dy - exp(y) * sum(dy).

    Saves y only (exp(y) is the softmax). Blocked along the last axis as `Softmax`.
    """

    @staticmethod
    def forward(ctx, x, axis):
        xp = backend.array_module(x)
        ctx.axis = axis
        if axis == x.ndim - 1:
            y = _by_row_blocks(_log_softmax_rows, x)
        else:
            y = x - x.max(axis=axis, keepdims=True)
            y -= xp.log(xp.exp(y).sum(axis=axis, keepdims=True))
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        if ctx.axis == y.ndim - 1:
            return (_by_row_blocks(_log_softmax_grad_rows, y, dy),)
        xp = backend.array_module(dy)
        return (dy - xp.exp(y) * dy.sum(axis=ctx.axis, keepdims=True),)


REDUCTIONS = ("mean", "sum", "none")


@register("cross_entropy")
class CrossEntropy(Function):
    """loss_i = -log softmax(logits_i)[t_i]: log-softmax and negative log-likelihood fused.

    logits (N, V) and integer targets (N,); rows whose target is `ignore_index` count for
    nothing. With reduction "mean" the loss is the mean over the other rows, and

        dlogits = (softmax(logits) - onehot(t)) * dloss / n_valid,  0 on ignored rows.

    Stable for any logit magnitude: the log-sum-exp is taken after subtracting the row max.
    Saves the softmax (N, V) and the targets. Both directions run row block by row block
    (backend.for_blocks): a block's shift, exp, sum and division stay in cache, and the
    blocks share the threads.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction):
        xp = backend.array_module(logits)
        n, v = logits.shape
        valid = targets != ignore_index
        safe = xp.where(valid, targets, 0)                 # any class index for ignored rows
        probs = xp.empty(logits.shape, dtype=logits.dtype)
        nll = xp.empty(n, dtype=logits.dtype)

        def block(rows):
            pb = probs[rows]                                # shifted logits, then softmax
            _shift_by_row_max(xp, logits[rows], pb)
            picked = pb[xp.arange(pb.shape[0]), safe[rows]]  # shifted logit of each target
            xp.exp(pb, out=pb)
            total = pb.sum(axis=1)
            pb /= total[:, None]
            xp.subtract(xp.log(total), picked, out=nll[rows])

        backend.for_blocks(block, logits)
        nll *= valid                                        # 0 on ignored rows
        count = int(valid.sum()) if reduction == "mean" else n
        ctx.save(probs, safe, valid)
        ctx.reduction, ctx.count = reduction, count
        if reduction == "none":
            return nll
        loss = nll.sum()
        if reduction == "mean":
            # 0/0 when every target is ignored: NaN, as PyTorch.
            loss = loss / logits.dtype.type(count) if count else logits.dtype.type(np.nan)
        return xp.asarray(loss, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dy):
        probs, safe, valid = ctx.saved
        xp = backend.array_module(probs)
        if ctx.reduction == "none":
            scale = dy * valid                              # (N,) per-row upstream
        elif ctx.reduction == "mean":
            scale = valid * (dy / dy.dtype.type(max(ctx.count, 1)))
        else:
            scale = valid * dy
        scale = scale.astype(probs.dtype, copy=False)
        dx = xp.empty(probs.shape, dtype=probs.dtype)

        def block(rows):
            xp.multiply(probs[rows], scale[rows, None], out=dx[rows])

        backend.for_blocks(block, probs)
        rows = xp.arange(len(safe))
        dx[rows, safe] = (probs[rows, safe] - 1) * scale   # the target's -1, as (p - 1) * s
        return dx, None


def _rows(a):
    """a as a 2-D (rows, last axis) view: the layout the blocked kernels work on."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


@register("layer_norm")
class LayerNorm(Function):
    """Normalise over the last `n_axes` axes, then scale and shift.

    mean, var over those axes (var biased), rstd = 1 / sqrt(var + eps),
    n = (x - mean) * rstd,  y = n * w + b.

    dn = dy * w
    dx = rstd * (dn - mean(dn) - n * mean(dn * n))
    dw = sum of dy * n over the leading axes,  db = sum of dy over the leading axes.

    Saves x, the row means and rstd (x's tensor is kept for backward anyway, so this costs
    two numbers a row) and recomputes n block by block in backward, where saving n would
    hold a second activation-sized array per layer norm until backward. Works row block by
    row block (backend.for_blocks) so the passes of one block stay in cache.
    """

    @staticmethod
    @backend.blas_on_tinygpt_threads
    def forward(ctx, x, *params, n_axes, eps, has_weight, has_bias):
        xp = backend.array_module(x)
        weight = params[0].reshape(-1) if has_weight else None
        bias = params[-1].reshape(-1) if has_bias else None
        d = 1
        for size in x.shape[x.ndim - n_axes:]:
            d *= size
        x2 = x.reshape(-1, d)                                   # (N, D)
        y2 = xp.empty_like(x2)
        mean = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)
        mean_weights = xp.full(d, 1.0 / d, dtype=x.dtype)       # row means as one gemv

        def block(rows):
            xb, nb, m, r = x2[rows], y2[rows], mean[rows], rstd[rows]   # n built in y
            xp.matmul(xb, mean_weights, out=m[:, 0])
            xp.subtract(xb, m, out=nb)
            var = xp.einsum("ij,ij->i", nb, nb)                 # sum of squares, no temporary
            var *= 1.0 / d
            var += eps
            r[:, 0] = var
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)
            nb *= r
            if weight is not None:
                nb *= weight
            if bias is not None:
                nb += bias

        backend.for_blocks(block, x2)
        ctx.save(x2, mean, rstd, weight, mean_weights)
        ctx.shape, ctx.has_weight, ctx.has_bias = x.shape, has_weight, has_bias
        ctx.param_shape = x.shape[x.ndim - n_axes:]
        return y2.reshape(x.shape)

    @staticmethod
    @backend.blas_on_tinygpt_threads
    def backward(ctx, dy):
        x2, mean, rstd, weight, mean_weights = ctx.saved
        xp = backend.array_module(dy)
        dy2 = dy.reshape(x2.shape)
        dx2 = xp.empty_like(x2)
        need_w = ctx.has_weight and ctx.needs_grad[1]

        def block(rows):
            dyb, dxb, r = dy2[rows], dx2[rows], rstd[rows]
            c = x2[rows] - mean[rows]                           # x - mean; n = c * rstd
            dn = dyb * weight if weight is not None else dyb
            # dx = rstd (dn - mean(dn) - n mean(dn n)) = rstd dn + b c - rstd mean(dn)
            # with b = -rstd^3 mean(dn c): two numbers a row stand in for n.
            r_dn = dn @ mean_weights                            # mean(dn)
            r_dn *= r[:, 0]
            b = xp.einsum("ij,ij->i", dn, c)
            b *= r[:, 0] ** 3
            b *= -1.0 / x2.shape[1]
            # this block's part of dw = sum of dy * n = rstd . (dy * c)
            dw = r[:, 0] @ (dyb * c) if need_w else None
            xp.multiply(dn, r, out=dxb)
            c *= b[:, None]
            dxb += c
            dxb -= r_dn[:, None]
            return dw

        dw_parts = backend.for_blocks(block, x2)
        grads = [dx2.reshape(ctx.shape)]
        if ctx.has_weight:
            grads.append(sum(dw_parts[1:], dw_parts[0]).reshape(ctx.param_shape)
                         if need_w else None)
        if ctx.has_bias:
            grads.append(_column_sums(dy2).reshape(ctx.param_shape)
                         if ctx.needs_grad[-1] else None)
        return tuple(grads)


GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_A = 0.044715


def _gelu_tanh(xp, x, y):
    """y = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3),
    with no temporaries. The second form needs exp where the first needs tanh, and NumPy's
    float32 exp costs less than its tanh (3.2 against 3.5 ns an element on an AVX2 host),
    with 6 cheap passes around it instead of 7. Where -2u overflows exp, y = x / inf = -0,
    the limit (x is negative there)."""
    c = _SQRT_2_OVER_PI
    xp.multiply(x, x, out=y)
    y *= -2.0 * _A * c
    y -= 2.0 * c
    y *= x                                                      # -2u
    with np.errstate(over="ignore"):
        xp.exp(y, out=y)
    y += 1
    xp.divide(x, y, out=y)


def _phi_from_output(xp, x, y, out):
    """out = y / x = Phi(x) (GELU's y = x * Phi(x); for the tanh form Phi(x) stands for
    (1 + tanh(u)) / 2), and 1/2 where x * x < _TINY2 (there Phi(x) = 1/2 to the last bit,
    and y / x would lose bits to subnormals or be 0 / 0). Returns x * x, which every GELU
    gradient needs next."""
    x2 = x * x
    small = x2 < _TINY2[x.dtype.char]
    with np.errstate(divide="ignore", invalid="ignore"):
        xp.divide(y, x, out=out)
    xp.copyto(out, x.dtype.type(0.5), where=small)
    return x2


# Where x * x is below these (|x| under 1e-150 in float64, 1e-18 in float32, ~3e-4 in
# float16), Phi(x) = 1/2 + x / sqrt(2 pi) rounds to 1/2; above them y = x * Phi(x) is a
# normal number, so y / x is exact to the last bit or two.
_TINY2 = {"d": 1e-300, "f": np.float32(1e-36), "e": np.float16(1e-7)}


def _gelu_tanh_grad(xp, x, y, dy, dx):
    """dx = dy * (s + 4 w s (1 - s)),  s = (1 + t) / 2 = y / x,  t = tanh(u),
    w = 0.5 x sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    (0.5 (1 + t) = s and 0.5 (1 - t^2) = 2 s (1 - s)). s is read off the output, so no
    tanh or exp is evaluated again: 12 cheap passes, about half the time of recomputing
    t. The price is precision where s is near 1 (x above ~2): y was rounded to float32,
    so 1 - s carries an absolute error of about an ulp of 1, times 4w. Against float64,
    the largest error of dx / dy over x in [-12, 12] is 3.4e-6 in float32 (at x ~ 4.7;
    recomputing t: 1.2e-6; PyTorch's gelu_backward: 1.0e-6)."""
    g = _phi_from_output(xp, x, y, dx)                          # dx = s, g = x^2
    g *= 6.0 * _A * _SQRT_2_OVER_PI
    g += 2.0 * _SQRT_2_OVER_PI
    g *= x                                                      # 4w
    one_minus_s = xp.subtract(1, dx)
    one_minus_s *= g
    one_minus_s += 1
    dx *= one_minus_s                                           # s (1 + 4w (1 - s))
    dx *= dy


def _gelu_exact(xp, x, y):
    """y = 0.5 x (1 + erf(x / sqrt 2))."""
    backend.erf(x * _INV_SQRT_2, out=y)
    y += 1
    y *= x
    y *= 0.5


def _gelu_exact_grad(xp, x, y, dy, dx):
    """dx = dy * (Phi(x) + x phi(x)),  Phi(x) = y / x,  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    g = _phi_from_output(xp, x, y, dx)                          # dx = Phi(x), g = x^2
    g *= -0.5
    xp.exp(g, out=g)
    g *= x
    g *= _INV_SQRT_2PI
    dx += g
    dx *= dy


@register("gelu")
class Gelu(Function):
    """GELU, the Gaussian error linear unit, y = x * Phi(x).

    approximate="none":  y = 0.5 x (1 + erf(x / sqrt 2)),  dx = dy * (Phi(x) + x phi(x))
        with phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    approximate="tanh" (GPT-2's):  u = sqrt(2/pi) (x + 0.044715 x^3),  t = tanh(u),
        y = 0.5 x (1 + t),  dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).

    Both backwards read Phi(x) (for tanh: s = (1 + t) / 2) off the output as y / x
    instead of evaluating erf (a ~25-pass rational function) or tanh again. Saves
    x and y; y is the next layer's input, which that layer keeps anyway, so it costs no
    memory. Both directions run block by block (backend.for_blocks) with in-place
    ufuncs, so the intermediates stay in cache.
    """

    @staticmethod
    def forward(ctx, x, approximate):
        xp = backend.array_module(x)
        ctx.approximate = approximate
        kernel = _gelu_tanh if approximate == "tanh" else _gelu_exact
        y = xp.empty_like(x)
        x2, y2 = _rows(x), _rows(y)
        backend.for_blocks(lambda rows: kernel(xp, x2[rows], y2[rows]), x2)
        ctx.save(x, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved
        xp = backend.array_module(x)
        kernel = _gelu_tanh_grad if ctx.approximate == "tanh" else _gelu_exact_grad
        dx = xp.empty_like(x)
        x2, y2, dy2, dx2 = _rows(x), _rows(y), _rows(dy), _rows(dx)
        backend.for_blocks(lambda rows: kernel(xp, x2[rows], y2[rows], dy2[rows], dx2[rows]), x2)
        return (dx,)


@register("embedding")
class Embedding(Function):
    """y = weight[idx]: row idx of a (V, C) table for each index.

    dweight = zeros (V, C), then dweight[idx] += dy: a scatter-add, so an index that
    appears several times receives the sum of its rows' gradients. idx gets no gradient.
    Small vocabularies compute the same sum as onehot(idx)^T @ dy (measured: 5x faster
    than np.add.at for V=65, N=16384 on the CPU); large ones scatter-add.
    """

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save(idx)
        ctx.shape = weight.shape
        return weight[idx]

    @staticmethod
    @backend.blas_on_tinygpt_threads
    def backward(ctx, dy):
        (idx,) = ctx.saved
        xp = backend.array_module(dy)
        v, c = ctx.shape
        rows, dy2 = idx.reshape(-1), dy.reshape(-1, c)
        if backend.device_of(dy) == "cpu" and v * len(rows) <= ONE_HOT_LIMIT:
            # Small vocabulary: the same sum as one (V, N) @ (N, C) product with the one-hot
            # matrix of idx, which BLAS runs several times faster than np.add.at's loop.
            one_hot = xp.zeros((v, len(rows)), dtype=dy.dtype)
            one_hot[rows, xp.arange(len(rows))] = 1
            return None, backend.matmul(one_hot, dy2)
        dw = xp.zeros((v, c), dtype=dy.dtype)
        backend.scatter_add(dw, rows, dy2)
        return None, dw


# Largest one-hot matrix (V x N elements) the embedding backward builds on the CPU.
ONE_HOT_LIMIT = 1 << 24


@register("dropout")
class Dropout(Function):
    """Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element;
    dx = dy * keep / (1 - p).  Saves the boolean mask (1 byte per element)."""

    @staticmethod
    def forward(ctx, x, p):
        gen = backend.generator(backend.device_of(x))
        keep = gen.random(x.shape, dtype=_random_dtype(x.dtype)) >= p
        ctx.scale = x.dtype.type(1.0 / (1.0 - p))
        ctx.save(keep)
        y = x * keep
        y *= ctx.scale
        return y

    @staticmethod
    def backward(ctx, dy):
        (keep,) = ctx.saved
        dx = dy * keep
        dx *= ctx.scale
        return (dx,)


def _random_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.float32


_causal_masks = {}


def causal_mask(xp, t, s):
    """Boolean (T, S) mask, True where attention is *blocked*: key j > query i
    (top-left aligned, as PyTorch's is_causal). Cached per size and device."""
    key = (xp.__name__, t, s)
    mask = _causal_masks.get(key)
    if mask is None:
        mask = xp.triu(xp.ones((t, s), dtype=bool), k=1)
        _causal_masks[key] = mask
    return mask


@register("scaled_dot_product_attention")
class ScaledDotProductAttention(Function):
    """out = dropout(softmax(q k^T * scale + mask)) @ v, per batch and head.

    q (B, H, T, hs), k (B, H, S, hs), v (B, H, S, hv) -> out (B, H, T, hv).
    The mask is a boolean (True = may attend, as PyTorch) or an additive float array
    broadcastable to (B, H, T, S); is_causal blocks keys after each query. A row whose
    keys are all blocked gets weights 0 (and output 0), never NaN.

    With P the softmax, D the dropout mask scaled by 1/(1-p) and A = P * D:
        dv = A^T @ dy,  dA = dy @ v^T,  dP = dA * D,
        dS = P * (dP - sum(dP * P, over keys)) * scale,
        dq = dS @ k,  dk = dS^T @ q.
    Saves q, k, v, P and D (P is (B, H, T, S): the one T^2 array).
    """

    @staticmethod
    def forward(ctx, q, k, v, *mask, is_causal, dropout_p, scale):
        xp = backend.array_module(q)
        t, s = q.shape[-2], k.shape[-2]
        att = q @ k.swapaxes(-1, -2)                        # (B, H, T, S)
        att *= scale
        blocked = None
        if mask:
            (m,) = mask
            if m.dtype == bool:
                blocked = ~m
            else:
                att += m
        if is_causal:
            c = causal_mask(xp, t, s)
            blocked = c if blocked is None else blocked | c
        if blocked is not None:
            xp.copyto(att, -xp.inf, where=blocked)          # broadcasts the (T, S) mask
        # Softmax over keys; rows with every key blocked have max -inf: use 0 as their
        # shift so exp gives exact zeros, and divide by 1 instead of 0.
        row_max = att.max(axis=-1, keepdims=True)
        row_max[~xp.isfinite(row_max)] = 0
        att -= row_max
        xp.exp(att, out=att)
        total = att.sum(axis=-1, keepdims=True)
        total[total == 0] = 1
        att /= total                                        # P
        keep = None
        if dropout_p > 0:
            gen = backend.generator(backend.device_of(q))
            keep = gen.random(att.shape, dtype=_random_dtype(att.dtype)) >= dropout_p
            weights = att * keep
            weights *= att.dtype.type(1.0 / (1.0 - dropout_p))
        else:
            weights = att
        ctx.save(q, k, v, att, keep)
        ctx.scale, ctx.dropout_p = scale, dropout_p
        return weights @ v                                  # (B, H, T, hv)

    @staticmethod
    def backward(ctx, dy):
        q, k, v, p, keep = ctx.saved
        need = ctx.needs_grad
        if keep is not None:
            d = p.dtype.type(1.0 / (1.0 - ctx.dropout_p))
            weights = p * keep
            weights *= d
        else:
            weights = p
        dv = weights.swapaxes(-1, -2) @ dy if need[2] else None
        dp = dy @ v.swapaxes(-1, -2)                        # dA, (B, H, T, S)
        if keep is not None:
            dp *= keep
            dp *= d
        # dS = P * (dP - sum(dP * P)) * scale
        ds = dp * p
        ds -= p * ds.sum(axis=-1, keepdims=True)
        ds *= ds.dtype.type(ctx.scale)
        dq = ds @ k if need[0] else None
        dk = ds.swapaxes(-1, -2) @ q if need[1] else None
        return (dq, dk, dv) + (None,) * (len(need) - 3)
