"""The layer ops of a GPT, each with its hand-derived backward (floor 2).

Each could be written as a chain of primitives (and is, in the tests, as an independent
oracle); as one op it saves fewer arrays and states its whole gradient in one formula.
The code below is the reference: plain array code that follows each docstring line by
line. Faster kernels for the CPU live in `tinygpt/autograd/fast/` under the same op names,
each tested equal to the op here; `tg.use_reference_ops()` runs these everywhere.

Shape letters: N rows, C channels (features), V vocabulary (classes).

Mixed precision: on float16 data, the ops that sum over many elements (softmax,
log-softmax, cross-entropy, layer norm, and attention's softmax) compute in float32
(`wide`) and return their input's dtype (cross-entropy's loss stays float32), as
PyTorch's autocast runs them.
"""

import math

import numpy as np

from .. import backend
from ..function import Function, register


def wide(x):
    """x in the dtype its sums run in: float32 for float16 data, else x itself."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


@register("linear")
class LinearOp(Function):
    """y = x @ W^T + b, with W of shape (out, in) as PyTorch's `Linear`.

    dx = dy @ W,  dW = dy^T @ x,  db = dy summed over all leading axes (x and dy viewed
    as (N, in) and (N, out), every leading axis one row axis).

    Saves x and W.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        check_features(x, weight)
        ctx.save(x, weight)
        y = x @ weight.T                                    # (..., out)
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved
        need = ctx.needs_grad
        dy2 = dy.reshape(-1, dy.shape[-1])                  # (N, out)
        dx = dy @ weight if need[0] else None               # (..., in)
        dw = dy2.T @ x.reshape(-1, x.shape[-1]) if need[1] else None   # (out, in)
        db = dy2.sum(axis=0) if len(need) > 2 and need[2] else None     # (out,)
        return dx, dw, db


def check_features(x, weight):
    """Raise a ValueError naming both shapes when x's last axis does not fit the weight."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} has {x.shape[-1]} features but the weight "
            f"of shape {weight.shape} expects {weight.shape[1]}")


@register("softmax")
class SoftmaxOp(Function):
    """y = exp(x - max) / sum(exp(x - max)) along `axis`;  dx = y * dy - y * sum(dy * y).

    Subtracting the row max changes nothing mathematically and keeps exp from
    overflowing. The Jacobian is dy_i/dx_j = y_i (delta_ij - y_j), so
    dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j dy_j - y_j sum_i dy_i y_i. Saves y only.
    """

    @staticmethod
    def forward(ctx, x, axis):
        xp = backend.array_module(x)
        w = wide(x)
        e = xp.exp(w - w.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
        ctx.axis = axis
        ctx.save(y)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        w = wide(dy)
        return ((y * w - y * (w * y).sum(axis=ctx.axis, keepdims=True)).astype(dy.dtype, copy=False),)


@register("log_softmax")
class LogSoftmaxOp(Function):
    """y = x - max - log(sum(exp(x - max))) along `axis`;  dx = dy - exp(y) * sum(dy).

    dy_i/dx_j = delta_ij - softmax(x)_j, and softmax(x) = exp(y). Saves y only.
    """

    @staticmethod
    def forward(ctx, x, axis):
        xp = backend.array_module(x)
        w = wide(x)
        shifted = w - w.max(axis=axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save(y)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        xp = backend.array_module(dy)
        w = wide(dy)
        return ((w - xp.exp(y) * w.sum(axis=ctx.axis, keepdims=True)).astype(dy.dtype, copy=False),)


REDUCTIONS = ("mean", "sum", "none")


@register("cross_entropy")
class CrossEntropyOp(Function):
    """loss_i = -log softmax(logits_i)[t_i]: log-softmax and negative log-likelihood fused.

    logits (N, V) and integer targets (N,); rows whose target is `ignore_index` count for
    nothing. With reduction "mean" the loss is the mean over the n_valid other rows, and

        dlogits = (softmax(logits) - onehot(t)) * dloss / n_valid,  0 on ignored rows

    ("sum": the same without the division; "none": row i scaled by its own dloss_i).
    Stable for any logit magnitude: the log-sum-exp is taken after subtracting the row max.
    Saves the softmax (N, V), the targets and which rows count. n_valid stays an array on
    the device (no host round trip); with every row ignored, "mean" is 0/0 = NaN, as in
    PyTorch.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction):
        xp = backend.array_module(logits)
        n = logits.shape[0]
        ctx.dtype = logits.dtype
        logits = wide(logits)
        valid = targets != ignore_index                     # (N,) rows that count
        t = xp.where(valid, targets, 0)                     # any class index for ignored rows
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (N, V)
        nll = -log_probs[xp.arange(n), t] * valid           # (N,), 0 on ignored rows
        ctx.save(xp.exp(log_probs), t, valid)
        ctx.reduction = reduction
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        with np.errstate(invalid="ignore"):                 # every row ignored: 0/0 = NaN
            return nll.sum() / valid.sum().astype(logits.dtype)

    @staticmethod
    def backward(ctx, dy):
        probs, t, valid = ctx.saved
        xp = backend.array_module(probs)
        scale = dy * valid                                  # "none": each row's own dloss
        if ctx.reduction == "mean":
            scale = scale / xp.maximum(valid.sum(), 1).astype(probs.dtype)
        dx = probs * scale[:, None].astype(probs.dtype)     # softmax * scale
        rows = xp.arange(len(t))
        dx[rows, t] -= scale.astype(probs.dtype)            # - onehot(t) * scale
        return dx.astype(ctx.dtype, copy=False), None


@register("layer_norm")
class LayerNormOp(Function):
    """Normalise over the last `n_axes` axes, then scale and shift.

    mean, var over those D elements (var biased), rstd = 1 / sqrt(var + eps),
    n = (x - mean) * rstd,  y = n * w + b.

    dn = dy * w
    dx = rstd * (dn - mean(dn) - n * mean(dn * n))
    dw = sum of dy * n over the leading axes,  db = sum of dy over the leading axes.

    Saves x, w, the row means and rstd (two numbers a row) and recomputes n in backward,
    rather than keeping a normalised copy of x per layer norm until backward.
    """

    @staticmethod
    def forward(ctx, x, *params, n_axes, eps, has_weight, has_bias):
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        axes = tuple(range(x.ndim - n_axes, x.ndim))        # the normalised axes
        w = wide(x)
        mean = w.mean(axis=axes, keepdims=True)             # pass 1: the mean
        centred = w - mean
        var = (centred * centred).mean(axis=axes, keepdims=True)   # pass 2: the variance
        rstd = 1.0 / (var + w.dtype.type(eps)) ** 0.5
        y = centred * rstd                                  # n
        if weight is not None:
            y *= weight
        if bias is not None:
            y += bias
        ctx.save(x, weight, mean, rstd)
        ctx.axes, ctx.has_bias = axes, has_bias
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        # y_j = n_j w_j + b_j with n_j = (x_j - mean) rstd, for the D elements of a row.
        # The chain rule through n, with dn = dy * w:
        #   dn_j/dx_i = rstd (delta_ij - 1/D) + (x_j - mean) d(rstd)/dx_i,
        #   d(rstd)/dx_i = -rstd^3 (x_i - mean) / D = -rstd^2 n_i / D,
        # so dn_j/dx_i = rstd (delta_ij - 1/D - n_j n_i / D), and summing over j:
        #   dx_i = sum_j dn_j dn_j/dx_i = rstd (dn_i - mean(dn) - n_i mean(dn n)).
        x, weight, mean, rstd = ctx.saved
        axes, dtype = ctx.axes, dy.dtype
        lead = tuple(range(x.ndim - len(axes)))             # the axes w and b broadcast over
        x, dy = wide(x), wide(dy)
        n = (x - mean) * rstd                               # recomputed, not saved
        dn = dy * weight if weight is not None else dy
        dx = rstd * (dn - dn.mean(axis=axes, keepdims=True)
                     - n * (dn * n).mean(axis=axes, keepdims=True))
        grads = [dx.astype(dtype, copy=False)]
        need = ctx.needs_grad
        if weight is not None:
            grads.append((dy * n).sum(axis=lead).astype(dtype, copy=False) if need[1] else None)
        if ctx.has_bias:
            grads.append(dy.sum(axis=lead).astype(dtype, copy=False) if need[-1] else None)
        return tuple(grads)


GELU_APPROXIMATIONS = ("none", "tanh")
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_TANH_A = 0.044715


@register("gelu")
class GeluOp(Function):
    """GELU, the Gaussian error linear unit, y = x * Phi(x), Phi the normal CDF.

    approximate="none":  y = 0.5 x (1 + erf(x / sqrt 2)),  dx = dy * (Phi(x) + x phi(x))
        with phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the normal density.
    approximate="tanh" (GPT-2's):  u = sqrt(2/pi) (x + 0.044715 x^3),  t = tanh(u),
        y = 0.5 x (1 + t),  dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).

    Saves x only; backward evaluates Phi (or t) again.
    """

    @staticmethod
    def forward(ctx, x, approximate):
        xp = backend.array_module(x)
        ctx.approximate = approximate
        ctx.save(x)
        if approximate == "tanh":
            t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x ** 3))
            return 0.5 * x * (1 + t)
        return 0.5 * x * (1 + backend.erf(x * INV_SQRT_2))

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved
        xp = backend.array_module(x)
        if ctx.approximate == "tanh":
            t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x ** 3))
            du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_A * x * x)        # du/dx
            return (dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)
        cdf = 0.5 * (1 + backend.erf(x * INV_SQRT_2))                  # Phi(x)
        pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI                      # phi(x)
        return (dy * (cdf + x * pdf),)


@register("embedding")
class EmbeddingOp(Function):
    """y = weight[idx]: row idx of a (V, C) table for each index.

    dweight = zeros (V, C), then dweight[idx] += dy: a scatter-add, so an index that
    appears several times receives the sum of its rows' gradients. idx gets no gradient.

    Saves idx and the table's shape.
    """

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save(idx)
        ctx.shape = weight.shape
        return weight[idx]

    @staticmethod
    def backward(ctx, dy):
        (idx,) = ctx.saved
        xp = backend.array_module(dy)
        dw = xp.zeros(ctx.shape, dtype=dy.dtype)
        backend.scatter_add(dw, idx.reshape(-1), dy.reshape(-1, ctx.shape[1]))
        return None, dw


@register("dropout")
class DropoutOp(Function):
    """Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element;
    dx = dy * keep / (1 - p).  Saves the boolean mask (1 byte per element)."""

    @staticmethod
    def forward(ctx, x, p):
        keep = bernoulli_keep(x.shape, p, x)
        ctx.scale = x.dtype.type(1.0 / (1.0 - p))
        ctx.save(keep)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, dy):
        (keep,) = ctx.saved
        return (dy * keep * ctx.scale,)


def bernoulli_keep(shape, p, like):
    """A boolean array of `shape` on `like`'s device, each element True with probability
    1 - p, drawn from that device's generator (`tg.manual_seed` seeds it). Uniforms are
    drawn in like's float dtype where the generator has it (float32 or float64)."""
    gen = backend.generator(backend.device_of(like))
    dtype = like.dtype if like.dtype in (np.float32, np.float64) else np.float32
    return gen.random(shape, dtype=dtype) >= p
