"""Composed twins of the fused ops: the same functions built only from primitive Tensor ops
(exp, log, sqrt, tanh, sum, mean, max, arithmetic, matmul, indexing, masked_fill, reshape,
permute). Autograd differentiates them op by op, so they are an independent oracle for the
hand-derived backward passes in tinygpt/autograd/ops/fused.py: the tests compare values and
gradients in float64. Slow and memory-hungry on purpose; never used by the package.
"""

import math

import numpy as np

from tinygpt.autograd import Tensor


def _const(array, like):
    """A constant tensor (no gradient) of `like`'s float dtype."""
    return Tensor(np.asarray(array, dtype=like.dtype))


def linear(x, weight, bias=None):
    """x @ W^T + b."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def softmax(x, dim):
    """exp(x - max) / sum(exp(x - max)); the max is a constant shift (detached)."""
    e = (x - x.max(dim=dim, keepdim=True).values.detach()).exp()
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x, dim):
    """x - max - log(sum(exp(x - max)))."""
    shifted = x - x.max(dim=dim, keepdim=True).values.detach()
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """-log_softmax(logits)[target] per row; logits (N, C), (C,) or (N, C, d1, ...)."""
    t = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets)
    out_shape = t.shape
    if logits.ndim == 1:
        logits, t = logits.reshape(1, -1), t.reshape(1)
    elif logits.ndim > 2:
        perm = (0,) + tuple(range(2, logits.ndim)) + (1,)
        logits = logits.permute(*perm).reshape(-1, logits.shape[1])
        t = t.reshape(-1)
    valid = t != ignore_index
    logp = log_softmax(logits, 1)
    picked = logp[Tensor(np.arange(len(t))), Tensor(np.where(valid, t, 0))]
    nll = -picked * _const(valid, logits)
    if reduction == "none":
        return nll.reshape(out_shape)
    if reduction == "sum":
        return nll.sum()
    return nll.sum() / float(valid.sum())


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * w + b over the trailing `normalized_shape` axes."""
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    dims = tuple(range(x.ndim - k, x.ndim))
    centred = x - x.mean(dim=dims, keepdim=True)
    var = (centred * centred).mean(dim=dims, keepdim=True)
    y = centred / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


ERF_TERMS = 100


def erf(x):
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1)).

    Every term has the sign of x, so the sum has no cancellation and is accurate to a few
    float64 ulps for |x| <= 4 with 100 terms (the terms shrink once 2n+1 > 2 x^2).
    """
    x2 = x * x
    term, total = x, x
    for n in range(1, ERF_TERMS):
        term = term * x2 * (2.0 / (2 * n + 1))
        total = total + term
    return total * (-x2).exp() * (2.0 / math.sqrt(math.pi))


def gelu(x, approximate="none"):
    """0.5 x (1 + erf(x / sqrt 2)), or GPT-2's 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (inner.tanh() + 1.0)
    return x * 0.5 * (erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def embedding(idx, weight):
    """weight[idx] with integer-array indexing (backward scatter-adds repeated rows)."""
    return weight[idx]


def dropout(x, keep, p):
    """x * keep / (1 - p) for a given boolean keep mask."""
    return x * _const(keep, x) * (1.0 / (1.0 - p))


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None,
                                 keep=None, dropout_p=0.0):
    """softmax(q k^T * scale + mask) (dropped out with the boolean `keep` mask) @ v.

    Blocked scores are set to -inf, so every query needs at least one allowed key (a fully
    blocked row is NaN here; the fused op gives 0 and has its own test).
    """
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        mask = attn_mask.numpy() if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        if mask.dtype == bool:
            att = att.masked_fill(Tensor(~mask), -math.inf)
        else:
            att = att + _const(mask, att)
    if is_causal:
        att = att.masked_fill(Tensor(np.triu(np.ones((t, s), dtype=bool), k=1)), -math.inf)
    weights = softmax(att, -1)
    if keep is not None:
        weights = dropout(weights, keep, dropout_p)
    return weights @ v
