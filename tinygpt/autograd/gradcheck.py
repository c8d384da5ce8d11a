"""Numerical gradient check: analytic gradients against float64 central differences
(floor 2). Imports: backend, tensor, function.

For f with output y and a random upstream gradient u, the analytic side is the gradient
of L = sum(y * u) from `backward(u)`; the numeric side perturbs one input element at a
time, (L(x + eps) - L(x - eps)) / (2 eps). A random u, not all ones: a wrong softmax
backward passes with all-ones (its error sums to zero over a row) and fails with random u.
"""

import math
from collections import namedtuple

import numpy as np

from . import backend
from .function import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """A gradient check failed; the message names the input, the index and both values."""


def _outputs(result):
    if isinstance(result, Tensor):
        return (result,)
    if isinstance(result, (tuple, list)) and all(isinstance(r, Tensor) for r in result):
        return tuple(result)
    raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(result)}")


def _weighted_sum(outputs, upstream):
    """L = sum over outputs of sum(y * u), in float64 on the host."""
    return sum(float((backend.to_numpy(y.data).astype(np.float64) * u).sum())
               for y, u in zip(outputs, upstream) if y.dtype.kind == "f")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Check the gradients `fn` gets from backward against central differences.

    `inputs` is a sequence of Tensors; every floating input with `requires_grad=True` is
    checked (integer inputs such as indices are passed through). Inputs must be float64:
    float32 central differences at eps=1e-6 are wrong in the second digit. An element
    passes when |analytic - numeric| <= atol + rtol * |numeric|.

    Also checks, as PyTorch's gradcheck does: each gradient has its input's shape and
    dtype, a zero upstream gradient gives zero gradients, and two backward passes agree.

    Returns True, or raises GradcheckError naming the input, the element index, the
    analytic and numeric values and the errors of the worst element (returns False
    instead with raise_exception=False).

    >>> x = tg.randn(3, 4, dtype="float64", requires_grad=True)
    >>> gradcheck(lambda x: x.tanh(), [x])
    True
    """
    report = compare_gradients(fn, inputs, eps, atol, rtol, seed)
    if report.failure is None:
        return True
    if raise_exception:
        raise GradcheckError(report.failure)
    return False


GradientReport = namedtuple("GradientReport", ["failure", "max_abs_err", "max_rel_err"])
GradientReport.__doc__ = """What `compare_gradients` found: `failure`, None or the message of
the worst element outside the tolerance; `max_abs_err`, the largest |analytic - numeric|;
`max_rel_err`, each input's largest absolute error over its largest |numeric| gradient (0
when both are 0), the worst over the inputs: a relative error per element would blow up
wherever a gradient is near 0."""


def compare_gradients(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """The work of `gradcheck`: the cheap checks (raising GradcheckError), then analytic
    against numeric gradients, element by element. Returns a GradientReport."""
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs)
               if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, nothing to check")
    for i in checked:
        t = inputs[i]
        if t.dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} has dtype {t.dtype}; gradients are checked in float64 "
                f"(make the input with dtype=float64 or call .double())")
        if any(s == 0 for s in t.data.strides) and t.data.size > 1:
            raise ValueError(
                f"gradcheck: input {i} has overlapping memory (a stride of 0, e.g. from "
                "expand/broadcast_to); perturbing one element would move several: pass a copy")
    rng = np.random.default_rng(seed)

    def run(upstream_scale=1.0):
        for i in checked:
            inputs[i].grad = None
        outs = _outputs(fn(*inputs))
        ups = [rng_up[j] * upstream_scale for j in range(len(outs))]
        diff = [o for o in outs if o.requires_grad]
        if not diff:
            raise GradcheckError("gradcheck: no output requires grad; fn did not use the inputs")
        # One backward through a sum of (y * u) so several outputs work too.
        total = None
        for o, u in zip(outs, ups):
            if not o.requires_grad:
                continue
            xp = backend.array_module(o.data)
            term = (o * Tensor(xp.asarray(u, dtype=o.dtype))).sum()
            total = term if total is None else total + term
        total.backward()
        return [None if inputs[i].grad is None else backend.to_numpy(inputs[i].grad.data)
                for i in checked]

    with no_grad():
        probe = _outputs(fn(*inputs))
    rng_up = [rng.standard_normal(o.shape) for o in probe]
    analytic = run()

    # Shapes and dtypes of the gradients.
    for i, g in zip(checked, analytic):
        if g is not None and (g.shape != inputs[i].shape or g.dtype != inputs[i].dtype):
            raise GradcheckError(
                f"gradcheck: the gradient of input {i} has shape {g.shape} and dtype {g.dtype}, "
                f"expected the input's {tuple(inputs[i].shape)} and {inputs[i].dtype}")
    # Two runs agree (backward must not write into saved arrays).
    again = run()
    for i, g1, g2 in zip(checked, analytic, again):
        if (g1 is None) != (g2 is None) or (g1 is not None and not np.array_equal(g1, g2)):
            raise GradcheckError(f"gradcheck: two backward passes disagree for input {i}")
    # A zero upstream gradient gives zero gradients.
    zero = run(0.0)
    for i, g in zip(checked, zero):
        if g is not None and np.any(g != 0):
            raise GradcheckError(
                f"gradcheck: a zero upstream gradient gave a non-zero gradient for input {i}")
    for i in checked:
        inputs[i].grad = None

    worst, max_abs, max_rel = None, 0.0, 0.0
    for i, g in zip(checked, analytic):
        t = inputs[i]
        numeric = np.zeros(t.shape).reshape(-1)
        with no_grad():
            # Write through t.data[index], not a flattened copy: for a non-contiguous input
            # (a transposed view) reshape(-1) copies and the input would never move.
            for j, index in enumerate(np.ndindex(*t.shape)):
                orig = float(t.data[index])
                t.data[index] = orig + eps
                plus = _weighted_sum(_outputs(fn(*inputs)), rng_up)
                t.data[index] = orig - eps
                minus = _weighted_sum(_outputs(fn(*inputs)), rng_up)
                t.data[index] = orig
                numeric[j] = (plus - minus) / (2 * eps)
        analytic_flat = np.zeros(numeric.shape) if g is None else g.reshape(-1)
        err = np.abs(analytic_flat - numeric)
        if err.size:
            scale = float(np.abs(numeric).max())
            max_abs = max(max_abs, float(err.max()))
            max_rel = max(max_rel, float(err.max()) / scale if scale
                          else (0.0 if err.max() == 0 else math.inf))
        excess = err - (atol + rtol * np.abs(numeric))
        if excess.size:
            j = int(np.argmax(excess))
            if excess[j] > 0 and (worst is None or excess[j] > worst[0]):
                worst = (excess[j], i, j, analytic_flat[j], numeric[j], err[j], t.shape)
    if worst is None:
        return GradientReport(None, max_abs, max_rel)
    _, i, j, a, n, err, shape = worst
    index = tuple(int(k) for k in np.unravel_index(j, shape)) if shape else ()
    message = (f"gradcheck failed for input {i} at index {index}: analytic {a:.10g}, numeric "
               f"{n:.10g} (absolute error {err:.3g}, relative error {err / max(abs(n), 1e-300):.3g}; "
               f"allowed atol={atol} + rtol={rtol} * |numeric|)")
    return GradientReport(message, max_abs, max_rel)
