"""Gradient clipping by the global norm, PyTorch's `clip_grad_norm_` (floor 4).

    total = (sum over every gradient element x of |x|^p)^(1/p)     (p = norm_type; max |x| for inf)
    if total > max_norm:  every gradient *= max_norm / (total + 1e-6)

All gradients are scaled by one factor, so the update keeps its direction and only its
length is capped. The 1e-6 keeps the factor finite when total is 0.

Imports: autograd (backend, fast.threads, Tensor).
"""

import math

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
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if math.isnan(max_norm) or max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if math.isnan(norm_type) or norm_type <= 0:
        raise ValueError(
            f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}")
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(backend.get_array_module("cpu").zeros((), dtype=backend.DEFAULT_FLOAT))
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

    # One 0-d array per gradient (on the CPU, shared out over tinygpt's threads, one BLAS
    # thread each), combined in order on the device; a single conversion to a Python
    # float at the end (on a GPU, one host synchronisation for all parameters).
    parts = (threads.parallel_map(part, grads) if backend.device_of(grads[0]) == "cpu"
             else [part(g) for g in grads])
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
