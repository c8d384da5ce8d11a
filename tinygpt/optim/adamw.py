"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as PyTorch (floor 4).

For each parameter p with gradient g, at step t = 1, 2, ...:

    p   <- p * (1 - lr * weight_decay)            decoupled decay, before the Adam step
    m   <- beta1 * m + (1 - beta1) * g            first moment (mean of g)
    v   <- beta2 * v + (1 - beta2) * g^2          second moment (mean of g^2)
    m_hat = m / (1 - beta1^t)                     bias corrections: m and v start at 0
    v_hat = v / (1 - beta2^t)
    p   <- p - lr * m_hat / (sqrt(v_hat) + eps)

The decay is "decoupled": it shrinks p directly rather than being added to g (which Adam
would then rescale by 1/sqrt(v_hat), decaying rarely-updated weights the most).

On a GPU the update runs over flat buffers, one fused kernel per group (adamw_flat.py).
Imports: numpy, autograd (backend, fast.threads), optim.optimizer, optim.adamw_flat.
"""

import math

import numpy as np

from ..autograd import backend
from ..autograd.fast import threads
from ..autograd.function import reference_ops_enabled
from .adamw_flat import FlatAdamW
from .optimizer import Optimizer, _check_number, int8_hint


class AdamW(Optimizer):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01).

    The defaults are PyTorch's. Any group's "lr" may be changed between steps (a schedule
    does `group["lr"] = lr`). State per parameter: "step" (an int), "exp_avg" (m) and
    "exp_avg_sq" (v), arrays of the parameter's shape, dtype and device.

    >>> opt = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._validate_group(defaults)
        super().__init__(params, defaults)
        self._flat = FlatAdamW()        # the GPU's flat buffers, made by the first step

    def _validate_group(self, group):
        _check_number("lr", group["lr"])
        _check_number("eps", group["eps"])
        _check_number("weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            _check_number(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
        group["betas"] = tuple(betas)

    def _update(self, group, p, g, state, scratch):
        """The update of one parameter (the reference; see `_update_all`)."""
        self._init_state(p.data, state)
        _adamw(backend.array_module(p.data), p.data, g, state["exp_avg"], state["exp_avg_sq"],
               scratch, *self._coefficients(group, state["step"]))

    @staticmethod
    def _init_state(w, state):
        """Create the moments (zeros) on the first step; count the step."""
        if not state:
            xp = backend.array_module(w)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(w)
            state["exp_avg_sq"] = xp.zeros_like(w)
        state["step"] += 1

    def _update_all(self, items):
        """Every parameter's update. On the CPU (unless `tg.use_reference_ops()`), the
        large parameters' arithmetic runs in blocks of threads.BLOCK_ELEMENTS (the dozen
        passes of `_adamw` over a block stay in cache) on tinygpt's threads; small ones
        (biases, gains) run one at a time on this thread, as `_update` does: threads passing
        tiny ufuncs back and forth lose more to the GIL than they gain. On a GPU: one fused
        kernel per group over flat buffers (`FlatAdamW`), where it applies. Elsewhere:
        `_update` for each parameter. The arithmetic of every element is the same."""
        if reference_ops_enabled() or not items:
            return super()._update_all(items)
        if backend.device_of(items[0][2]) != "cpu":
            if self._flat.step(self, items):
                return None
            return super()._update_all(items)
        jobs = []
        for group, p, g in items:
            w, state = p.data, self._state(p)
            if w.size < PARALLEL_ELEMENTS:
                self._update(group, p, g, state, self._scratch_for(w))
                continue
            self._init_state(w, state)
            arrays = (w, g, state["exp_avg"], state["exp_avg_sq"])
            coefficients = self._coefficients(group, state["step"])
            if all(a.flags.c_contiguous for a in arrays):
                flat = [a.reshape(-1) for a in arrays]
                for i in range(0, w.size, threads.BLOCK_ELEMENTS):
                    block = slice(i, i + threads.BLOCK_ELEMENTS)
                    jobs.append(([a[block] for a in flat], coefficients))
            else:
                jobs.append((arrays, coefficients))
        threads.parallel_map(
            lambda job: _adamw(np, *job[0], np.empty_like(job[0][0]), *job[1]), jobs)

    @staticmethod
    def _coefficients(group, t):
        """(decay factor, beta1, beta2, eps', step size) of step t: Python floats, never
        NumPy float64 scalars, which would turn each float32 ufunc into a float64 loop
        plus a cast back."""
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        # lr m_hat / (sqrt(v_hat) + eps) with m_hat = m / bc1, v_hat = v / bc2 equals
        # (lr sqrt(bc2) / bc1) m / (sqrt(v) + eps sqrt(bc2)): the bias corrections become
        # two scalars, which saves a pass over the array (Adam paper, section 2).
        bias_correction1 = 1.0 - beta1 ** t
        sqrt_bias_correction2 = math.sqrt(1.0 - beta2 ** t)
        return (1.0 - lr * weight_decay, beta1, beta2, eps * sqrt_bias_correction2,
                lr * sqrt_bias_correction2 / bias_correction1)


# Parameters of at least this many elements are updated on tinygpt's threads.
PARALLEL_ELEMENTS = 1 << 14


def _adamw(xp, w, g, m, v, scratch, decay, beta1, beta2, eps, step_size):
    """One AdamW update of w, m, v from g, in place. Every line is one in-place ufunc: no
    temporaries beyond `scratch`."""
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


def configure_param_groups(named_params, weight_decay):
    """Split parameters into a decayed group and an undecayed one, as nanoGPT does.

    Tensors with 2 or more dimensions (the weights of matmuls and embeddings) are decayed;
    those with fewer (biases, LayerNorm gains and biases) are not: shrinking a gain or a
    bias towards 0 does not regularise anything. Parameters with requires_grad=False are
    left out, and a tensor listed under two names (tied weights) is kept once.

    named_params: (name, tensor) pairs, e.g. `model.named_parameters()`, or a dict.
    Returns [{"params": decayed, "weight_decay": weight_decay},
             {"params": undecayed, "weight_decay": 0.0}], ready for `AdamW(groups, ...)`.
    """
    weight_decay = _check_number("weight_decay", weight_decay)
    if hasattr(named_params, "items"):
        named_params = named_params.items()
    decay, no_decay, seen = [], [], set()
    for item in named_params:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"configure_param_groups expects (name, tensor) pairs such as "
                f"model.named_parameters(), got {type(item).__name__}")
        name, p = item
        if int8_hint(p):
            raise TypeError(f"configure_param_groups: {name} has dtype {p.dtype}{int8_hint(p)}")
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
