"""Gradient clipping by the global norm, PyTorch's `clip_grad_norm_` (floor 4).

    total = (sum over every gradient element x of |x|^p)^(1/p)     (p = norm_type; max |x| for inf)
    if total > max_norm:  every gradient *= max_norm / (total + 1e-6)

All gradients are scaled by one factor, so the update keeps its direction and only its
length is capped. The 1e-6 keeps the factor finite when total is 0.

On a GPU the host never waits for the norm: the gradients are gathered into one buffer
(one kernel), their norm is one reduction, and every gradient is scaled by
min(1, max_norm / (total + 1e-6)), computed on the device, in one kernel; each `.grad`
then views its part of that buffer. (Reading the norm back to decide whether to scale
would stop the host until the whole backward pass has run.)

Imports: autograd (backend, fast.threads, Tensor), validate.
"""

import math

from .. import validate
from ..autograd import backend
from ..autograd.fast import threads
from ..autograd.tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of `parameters` in place so that their joint norm is at most
    `max_norm`; return the norm they had before clipping, as a 0-d Tensor (`float(t)` or
    `t.item()` gives the number).

    parameters: a Tensor or an iterable of Tensors; those without a gradient are skipped.
    norm_type:  p of the p-norm (2.0 by default), or float("inf") for the largest |x|.
    error_if_nonfinite: raise RuntimeError when the norm is NaN or infinite (otherwise the
        gradients are scaled by the resulting NaN or 0 factor, as PyTorch does).

    >>> total = clip_grad_norm_(model.parameters(), 1.0)
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    max_norm = validate.real("clip_grad_norm_: max_norm", max_norm, minimum=0, finite=False)
    norm_type = validate.real("clip_grad_norm_: norm_type (inf for the largest |x|)",
                              norm_type, minimum=0, low_open=True, finite=False)
    with_grads = [p for p in parameters if p.grad is not None]
    grads = [p.grad.data for p in with_grads]
    if not grads:
        return Tensor(backend.array_module_for_device("cpu").zeros((), dtype=backend.DEFAULT_FLOAT))
    if backend.device_of(grads[0]) != "cpu":
        return _clip_on_device(with_grads, max_norm, norm_type, error_if_nonfinite)
    xp = backend.array_module(grads[0])
    dtype = grads[0].dtype

    def part(g):
        flat = g.reshape(-1)
        if norm_type == math.inf:
            return xp.abs(flat).max() if flat.size else xp.zeros((), dtype=dtype)
        if norm_type == 2.0:
            return xp.dot(flat, flat)               # sum of squares, one BLAS call
        if norm_type == 1.0:
            return xp.abs(flat).sum()
        return (xp.abs(flat) ** norm_type).sum()

    # One 0-d array per gradient, shared out over tinygpt's threads (one BLAS thread
    # each), combined in order (a GPU took _clip_on_device above).
    parts = threads.parallel_map(part, grads)
    total = None
    for p in parts:
        if norm_type == math.inf:
            total = p if total is None else xp.maximum(total, p)
        else:
            # Accumulate in float64: a few hundred partial sums lose nothing that way.
            p = p.astype("float64")
            total = p if total is None else total + p
    if norm_type != math.inf:
        total = total ** (1.0 / norm_type)
    total = float(total)

    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total {norm_type}-norm of the gradients is {total}; "
            "the gradients are not finite (set error_if_nonfinite=False to clip anyway)")
    clip_coef = max_norm / (total + 1e-6)
    if clip_coef < 1.0 or math.isnan(clip_coef):
        for g in grads:
            g *= clip_coef
    return Tensor(xp.asarray(total, dtype=dtype))


def _sum_of_squares(xp, flat):
    return xp.sum(flat.astype("float64") * flat.astype("float64"))


def _sum_of_powers(xp, flat, p):
    return xp.sum(xp.abs(flat.astype("float64")) ** p)


def _clip_factor(xp, total, max_norm):
    return xp.minimum(max_norm / (total + 1e-6), 1.0)


_SUM_OF_SQUARES = backend.fuse(_sum_of_squares)
_SUM_OF_POWERS = backend.fuse(_sum_of_powers)
_CLIP_FACTOR = backend.fuse(_clip_factor)


def _clip_on_device(params, max_norm, norm_type, error_if_nonfinite):
    """clip_grad_norm_ on a GPU without a host round trip (see the module docstring): the
    norm and the factor stay on the device; only error_if_nonfinite reads the norm back.
    Gradients of one dtype share a buffer (one, unless the dtypes are mixed)."""
    xp = backend.array_module(params[0].grad.data)
    by_dtype = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    flats = {dtype: xp.concatenate([p.grad.data.reshape(-1) for p in group])
             for dtype, group in by_dtype.items()}
    if norm_type == math.inf:
        parts = [xp.abs(flat).max().astype("float64") for flat in flats.values()]
        total = parts[0] if len(parts) == 1 else xp.stack(parts).max()
    else:
        parts = [_SUM_OF_SQUARES(flat) if norm_type == 2.0 else _SUM_OF_POWERS(flat, norm_type)
                 for flat in flats.values()]
        total = (parts[0] if len(parts) == 1 else xp.stack(parts).sum()) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(
            f"clip_grad_norm_: the total {norm_type}-norm of the gradients is {float(total)}; "
            "the gradients are not finite (set error_if_nonfinite=False to clip anyway)")
    # min(1, factor) is NaN for a NaN norm (CuPy's minimum propagates NaN): the gradients
    # become NaN, as PyTorch's do.
    factor = _CLIP_FACTOR(total, max_norm)
    for dtype, flat in flats.items():
        flat *= factor.astype(dtype)
        start = 0
        for p in by_dtype[dtype]:
            n = p.grad.data.size
            p.grad.data = flat[start:start + n].reshape(p.grad.data.shape)
            start += n
    return Tensor(total.astype(params[0].grad.dtype))
