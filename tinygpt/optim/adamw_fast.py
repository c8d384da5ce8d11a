"""AdamW's fast versions (floor 4): the update of adamw.py's `adamw_reference` with its
bias corrections folded into two scalars, on the CPU in blocks on tinygpt's threads, on
a GPU in one fused kernel over flat buffers (adamw_flat.py). `AdamW.step` runs them by
default; `tg.use_reference_ops()` runs the reference instead. Each is tested equal to the
reference (tests/optim/test_adamw_fast.py). Imports: numpy, autograd (backend,
fast.threads), optim.adamw_flat (through the optimizer's `_flat`).

The folding (Adam paper, section 2): lr m_hat / (sqrt(v_hat) + eps) with m_hat = m / bc1,
v_hat = v / bc2 equals (lr sqrt(bc2) / bc1) m / (sqrt(v) + eps sqrt(bc2)), which saves two
passes over the array; the result differs from the formula's by rounding only.
"""

import math

import numpy as np

from ..autograd import backend
from ..autograd.fast import threads

# Parameters of at least this many elements are updated on tinygpt's threads.
PARALLEL_ELEMENTS = 1 << 14


def update_all(optimizer, items):
    """Every (group, p, g) of `items` updated. On the CPU the large parameters'
    arithmetic runs in blocks of threads.BLOCK_ELEMENTS (the dozen passes of
    `adamw_folded` over a block stay in cache) on tinygpt's threads; small ones (biases,
    gains) run one at a time on this thread: threads passing tiny ufuncs back and forth
    lose more to the GIL than they gain. On a GPU: one fused kernel per group over flat
    buffers (`FlatAdamW`), where it applies, else one parameter at a time. The
    arithmetic of every element is the same."""
    if backend.device_of(items[0][2]) != "cpu":
        if not optimizer._flat.step(optimizer, items, coefficients):
            for group, p, g in items:
                update_one(optimizer, group, p, g)
        return
    jobs = []
    for group, p, g in items:
        w, state = p.data, optimizer._state(p)
        if w.size < PARALLEL_ELEMENTS:
            update_one(optimizer, group, p, g)
            continue
        optimizer._init_state(w, state)
        arrays = (w, g, state["exp_avg"], state["exp_avg_sq"])
        folded = coefficients(group, state["step"])
        if all(a.flags.c_contiguous for a in arrays):
            flat = [a.reshape(-1) for a in arrays]
            for i in range(0, w.size, threads.BLOCK_ELEMENTS):
                block = slice(i, i + threads.BLOCK_ELEMENTS)
                jobs.append(([a[block] for a in flat], folded))
        else:
            jobs.append((arrays, folded))
    threads.parallel_map(
        lambda job: adamw_folded(np, *job[0], np.empty_like(job[0][0]), *job[1]), jobs)


def update_one(optimizer, group, p, g):
    """One parameter's update on this thread, in the optimizer's shared scratch array."""
    state = optimizer._state(p)
    optimizer._init_state(p.data, state)
    adamw_folded(backend.array_module(p.data), p.data, g, state["exp_avg"],
                 state["exp_avg_sq"], optimizer._scratch_for(p.data),
                 *coefficients(group, state["step"]))


def coefficients(group, t):
    """(decay factor, beta1, beta2, eps', step size) of step t: Python floats, never
    NumPy float64 scalars, which would turn each float32 ufunc into a float64 loop plus a
    cast back. eps' = eps sqrt(bc2), step size = lr sqrt(bc2) / bc1 (the folding)."""
    lr, eps = float(group["lr"]), float(group["eps"])
    weight_decay = float(group["weight_decay"])
    beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
    bias_correction1 = 1.0 - beta1 ** t
    sqrt_bias_correction2 = math.sqrt(1.0 - beta2 ** t)
    return (1.0 - lr * weight_decay, beta1, beta2, eps * sqrt_bias_correction2,
            lr * sqrt_bias_correction2 / bias_correction1)


def adamw_folded(xp, w, g, m, v, scratch, decay, beta1, beta2, eps, step_size):
    """One AdamW update of w, m, v from g, in place, with `coefficients`' folded scalars.
    Every line is one in-place ufunc: no temporaries beyond `scratch`."""
    if decay != 1.0:
        w *= decay                                          # p <- p (1 - lr wd)
    m *= beta1
    xp.multiply(g, 1.0 - beta1, out=scratch)
    m += scratch                                            # m <- b1 m + (1 - b1) g
    v *= beta2
    xp.multiply(g, g, out=scratch)
    scratch *= 1.0 - beta2
    v += scratch                                            # v <- b2 v + (1 - b2) g^2
    xp.sqrt(v, out=scratch)
    scratch += eps
    xp.divide(m, scratch, out=scratch)
    scratch *= step_size
    w -= scratch                                # p <- p - lr m_hat / (sqrt(v_hat) + eps)
