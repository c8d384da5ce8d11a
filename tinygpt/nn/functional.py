"""Stateless layer ops with PyTorch's signatures (floor 3): `import tinygpt.nn.functional as F`.

Each function checks its arguments (so a bad shape or option is named here, in the
user's terms) and calls one fused op of `tinygpt.autograd.ops.fused`, where the forward
and the backward sit side by side. Imports: autograd.
"""

import math
import numbers

import numpy as np

from ..autograd import backend
from ..autograd.ops.attention import ScaledDotProductAttentionOp, SelfAttentionOp
from ..autograd.ops.fused import (GELU_APPROXIMATIONS, REDUCTIONS, CrossEntropyOp, DropoutOp,
                               EmbeddingOp, GeluOp, LayerNormOp, LinearOp)
from ..autograd.ops.rotary import RotaryOp
from ..autograd.tensor import Tensor


def linear(x, weight, bias=None):
    """y = x @ weight^T + bias; x (..., in), weight (out, in), bias (out,)."""
    if bias is None:
        return LinearOp.apply(x, weight)
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"linear: bias of shape {tuple(bias.shape)} does not match the weight's "
            f"{weight.shape[0]} outputs (expected ({weight.shape[0]},))")
    return LinearOp.apply(x, weight, bias)


def relu(x):
    return x.relu()


def gelu(x, approximate="none"):
    """GELU; approximate="none" (exact, erf) as PyTorch's default, or "tanh" (GPT-2's)."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(
            f"gelu: unknown approximate={approximate!r}, expected one of {GELU_APPROXIMATIONS}")
    return GeluOp.apply(x, approximate=approximate)


def softmax(x, dim):
    return x.softmax(dim)


def log_softmax(x, dim):
    return x.log_softmax(dim)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """Cross-entropy of raw logits against integer class targets (PyTorch's semantics).

    logits (N, C) with targets (N,), or (C,) with a 0-d target, or (N, C, d1, ...) with
    targets (N, d1, ...) (the class axis is 1). Targets equal to `ignore_index` count for
    nothing; "mean" averages over the other targets. Class ids are checked when they are
    on the host; ids already on a GPU are not (see `_check_class_ids`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"cross_entropy: unknown reduction={reduction!r}, expected one of {REDUCTIONS}")
    given = targets
    if not isinstance(targets, Tensor):
        # Host data (a list) is checked below on the host, then moved to logits' device.
        targets = Tensor(targets if backend.is_array(targets) else
                         np.asarray(targets))  # numpy: host data (a list from the user)
    if targets.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have a class dimension, got a 0-d tensor")
    expected = (logits.shape[:1] + logits.shape[2:]) if logits.ndim > 1 else ()
    if tuple(targets.shape) != tuple(expected):
        raise ValueError(
            f"cross_entropy: logits of shape {tuple(logits.shape)} need targets of shape "
            f"{tuple(expected)}, got {tuple(targets.shape)}")
    n_classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
    _check_class_ids(targets.data, n_classes, ignore_index)
    if targets is not given:
        targets = Tensor(backend.to_device(targets.data, logits.device))
    out_shape = expected
    if logits.ndim == 1:
        flat_logits, flat_targets = logits.reshape(1, -1), targets.reshape(1)
    elif logits.ndim == 2:
        flat_logits, flat_targets = logits, targets
    else:  # (N, C, d1, ...) -> (N * d1 * ..., C)
        perm = (0,) + tuple(range(2, logits.ndim)) + (1,)
        flat_logits = logits.permute(*perm).reshape(-1, n_classes)
        flat_targets = targets.reshape(-1)
    loss = CrossEntropyOp.apply(flat_logits, flat_targets, ignore_index=ignore_index,
                              reduction=reduction)
    if reduction == "none":
        loss = loss.reshape(out_shape)
    return loss


def _check_class_ids(targets, n_classes, ignore_index):
    """Name the first out-of-range class id and the valid range. Only host arrays are
    checked: on a GPU the check would make the host wait for the device at every call
    (CuPy wraps an out-of-range index around instead of failing), so ids meant for a GPU
    are checked where they are made, on the host (`BatchSampler(vocab_size=...)`)."""
    if targets.size == 0 or backend.device_of(targets) != "cpu":
        return
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= n_classes))
    if bool(bad.any()):
        value = int(targets[bad].reshape(-1)[0])
        raise IndexError(
            f"cross_entropy: target {value} is out of range: class ids must be in "
            f"[0, {n_classes - 1}] (or ignore_index={ignore_index})")


def nll_loss(log_probs, targets, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C) at integer targets (N,)."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"nll_loss: unknown reduction={reduction!r}, expected one of {REDUCTIONS}")
    xp = backend.array_module(log_probs.data)
    t = targets.data if isinstance(targets, Tensor) else xp.asarray(targets)
    _check_class_ids(t, log_probs.shape[1], ignore_index)
    valid = t != ignore_index
    picked = -log_probs[xp.arange(len(t)), xp.where(valid, t, 0)] * Tensor(
        valid.astype(log_probs.dtype))
    if reduction == "none":
        return picked
    if reduction == "sum":
        return picked.sum()
    # The count stays an array on the tensor's device (no host round trip on a GPU).
    return picked.sum() / Tensor(valid.sum().astype(log_probs.dtype))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` axes, then scale by weight and
    shift by bias (each of that shape, or None)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape or x.ndim < k:
        raise ValueError(
            f"layer_norm: input of shape {tuple(x.shape)} does not end in normalized_shape "
            f"{normalized_shape}")
    params = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            if tuple(p.shape) != normalized_shape:
                raise ValueError(
                    f"layer_norm: {name} of shape {tuple(p.shape)}, expected {normalized_shape}")
            params.append(p)
    return LayerNormOp.apply(x, *params, n_axes=k, eps=float(eps),
                           has_weight=weight is not None, has_bias=bias is not None)


def embedding(idx, weight):
    """Rows of `weight` (V, C) at the integer indices `idx` (any shape) -> idx.shape + (C,).

    Indices on the host are checked; indices already on a GPU are not (the check would
    make the host wait for the device at every call, and CuPy wraps an index past the
    table around): check ids meant for a GPU where they are made."""
    if not isinstance(idx, Tensor):
        data = idx if backend.is_array(idx) else np.asarray(idx)  # numpy: host data (a list)
        _check_indices(data, weight.shape[0])
        idx = Tensor(backend.to_device(data, weight.device))
    elif idx.device == "cpu":
        _check_indices(idx.data, weight.shape[0])
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    return EmbeddingOp.apply(idx, weight)


def _check_indices(idx, v):
    """Name an index of `idx` outside [0, v) when it is an integer host array."""
    if idx.size and idx.dtype.kind in "iu" and backend.device_of(idx) == "cpu":
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= v:
            bad = high if high >= v else low
            raise IndexError(
                f"embedding: index {bad} is out of range for a table of {v} rows "
                f"(valid range [0, {v - 1}])")


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p and scale the rest by
    1 / (1 - p). The identity (the same tensor) when not training or p == 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return DropoutOp.apply(x, p=float(p))


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0,
                                 scale=None):
    """softmax(q k^T / sqrt(head_size) + mask) @ v with q (B, H, T, hs), k (B, H, S, hs),
    v (B, H, S, hv) (any leading axes that broadcast).

    attn_mask: boolean (True = may attend) or additive float, broadcastable to
    (B, H, T, S). is_causal: query i attends to keys j <= i. A fully blocked row gives 0.
    """
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError("scaled_dot_product_attention: q, k, v need at least 2 dimensions")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and v "
            f"{tuple(v.shape)} do not fit: q and k need one head size, k and v one length")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    inputs = [q, k, v]
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            attn_mask = Tensor(backend.array_module(q.data).asarray(attn_mask))
        if attn_mask.requires_grad:
            raise ValueError("scaled_dot_product_attention: attn_mask gets no gradient; detach it")
        if attn_mask.dtype != bool and attn_mask.dtype.kind != "f":
            raise TypeError(
                f"scaled_dot_product_attention: attn_mask must be boolean or float, got "
                f"{attn_mask.dtype}")
        inputs.append(attn_mask)
    return ScaledDotProductAttentionOp.apply(*inputs, is_causal=bool(is_causal),
                                           dropout_p=float(dropout_p), scale=float(scale))


def self_attention(qkv, n_head, dropout_p=0.0, scale=None, key_mask=None, window=None):
    """Causal multi-head self-attention of a fused projection qkv (B, T, 3C) -> (B, T, C).

    The same as splitting qkv into q, k, v, viewing each as (B, n_head, T, C / n_head),
    `scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)` and
    putting the heads side by side again, in one op without the copies (see
    `tinygpt.autograd.ops.attention`).

    key_mask: (B, T) booleans or 0/1 numbers, False / 0 where a position is padding: no
        query attends to it (Hugging Face's `attention_mask`). A query whose keys are all
        padding gets output 0.
    window: an int W >= 1: each query sees only the W most recent positions, itself
        included (a locally banded layer); None sees every earlier position.
    """
    if qkv.ndim != 3 or qkv.shape[-1] % 3 or (qkv.shape[-1] // 3) % n_head:
        raise ValueError(
            f"self_attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
            f"got shape {tuple(qkv.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"self_attention: dropout_p must be in [0, 1), got {dropout_p}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise ValueError(f"self_attention: window must be an int >= 1 or None, got {window!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(qkv.shape[-1] // 3 // n_head)
    inputs = [qkv]
    if key_mask is not None:
        inputs.append(padding_mask(key_mask, qkv, "self_attention"))
    return SelfAttentionOp.apply(*inputs, n_head=int(n_head), dropout_p=float(dropout_p),
                               scale=float(scale), window=window)


def rotary(x, positions, base=10000.0, scale=1.0):
    """x (B, H, T, hs) with each head's channel pairs (i, i + hs/2) rotated by the angle
    (p / scale) * base^(-2i / hs) at position p: rotary position embedding with GPT-NeoX's
    rotate-half pairing (as Hugging Face's Llama); see `tinygpt.autograd.ops.rotary`.

    positions: T integer (or float) positions shared by the batch, or (B, T), one row per
        sequence (a Tensor or array; no gradient).
    base: the frequency base (> 1; RoFormer's and Llama's 10000).
    scale: >= 1; position p is used as p / scale (position interpolation, Chen et al.
        2023: a model trained on T positions run on scale * T).
    """
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(f"rotary: x must be (B, H, T, head_size) with an even head_size, got "
                         f"shape {tuple(x.shape)}")
    if not isinstance(positions, Tensor):
        positions = Tensor(backend.array_module(x.data).asarray(positions))
    if positions.requires_grad or positions.dtype.kind not in "iuf":
        raise TypeError(f"rotary: positions must be numbers without a gradient, got dtype "
                        f"{positions.dtype} (requires_grad={positions.requires_grad})")
    B, _, T, _ = x.shape
    if tuple(positions.shape) not in ((T,), (B, T)):
        raise ValueError(f"rotary: positions of shape {tuple(positions.shape)} do not match x "
                         f"{tuple(x.shape)}: expected ({T},) or ({B}, {T})")
    if isinstance(base, bool) or not isinstance(base, numbers.Real) or not base > 1:
        raise ValueError(f"rotary: base must be a number > 1, got {base!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) \
            or not 1 <= scale < math.inf:
        raise ValueError(f"rotary: scale must be a finite number >= 1, got {scale!r}")
    return RotaryOp.apply(x, positions, base=float(base), scale=float(scale))


def padding_mask(mask, x, where="attention_mask"):
    """A (B, T) padding mask (True or 1 where a position is real, False or 0 where it is
    padding; any nonzero number counts as real) as a boolean tensor on x's device, checked
    against x's first two axes."""
    if not isinstance(mask, Tensor):
        mask = Tensor(backend.array_module(x.data).asarray(mask))
    if mask.requires_grad:
        raise ValueError(f"{where}: the padding mask gets no gradient; detach it")
    if mask.dtype != bool and mask.dtype.kind not in "iuf":
        raise TypeError(f"{where}: the padding mask must hold booleans or 0/1 numbers, got "
                        f"dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{where}: the padding mask has shape {tuple(mask.shape)}, expected "
                         f"(batch, sequence) = {tuple(x.shape[:2])}")
    return mask if mask.dtype == bool else Tensor(mask.data != 0)


__all__ = ["padding_mask", "linear", "relu", "gelu", "softmax", "log_softmax", "cross_entropy", "nll_loss",
           "layer_norm", "embedding", "dropout", "scaled_dot_product_attention",
           "self_attention", "rotary"]
