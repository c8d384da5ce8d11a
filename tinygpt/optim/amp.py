"""Mixed-precision training: float16 activations and products, float32 master weights,
dynamic loss scaling (floor 4). Imports: autograd (backend, Tensor).

float16 holds numbers up to 65504 and down to 6e-8 (subnormal), with three decimal
digits. Its products are fast on a GPU, but three things go wrong if a whole training
step is float16 (Micikevicius et al., 2018, "Mixed Precision Training"):

- an update lr * m / sqrt(v) much smaller than the weight it changes rounds away, so the
  weights are kept in float32 ("master weights") and the optimizer runs there; the float16
  model is a copy, refreshed after each step (`master_copy`, `copy_to`);
- small gradients underflow to 0, so the loss is multiplied by a scale (2^16 to start)
  before backward, which scales every gradient by as much, and the float32 copies are
  divided by it again (`GradScaler.unscale`);
- too large a scale overflows to inf: that step is skipped and the scale halved; after
  `growth_interval` steps without an overflow it is doubled again. PyTorch's GradScaler
  does the same, with the same defaults.

The scale is a float32 number, as PyTorch's (its `_amp_update_scale` multiplies in float32):
a growth whose product is not finite in float32 is refused (the scale stays, at most
2^127), and a back-off never takes it below float32's smallest normal number, 2^-126
(there PyTorch would go on into subnormals and reach 0, whose inverse is inf; tinygpt
stops, so that 1 / scale stays finite). A saved scale outside [2^-126, float32's largest]
(0, NaN, inf, a negative number) is refused when loaded.

Sums over many elements (layer norm, softmax, cross-entropy) run in float32 inside the ops
(see tinygpt/autograd/ops/fused.py), and the loss is float32.
"""

import copy
import math

import numpy as np

from .. import validate
from ..autograd import backend
from ..autograd.tensor import Tensor


FLOAT32_TINY = float(np.finfo(np.float32).tiny)       # 2^-126, the smallest normal float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32(value):
    """value rounded to float32, as a Python float."""
    return float(np.float32(value))


def check_scale(value, what):
    """`value` as a float32-valued float; a ValueError unless it is a number in float32's
    normal range [2^-126, 3.4e38] (not 0, NaN, inf or negative)."""
    return _float32(validate.real(f"{what} (float32's normal range, 2^-126 up)", value,
                                  minimum=FLOAT32_TINY, maximum=FLOAT32_MAX))


def master_copy(model):
    """A float32 copy of `model` (its parameters shared between tied modules as in the
    original): the weights the optimizer updates, and what checkpoints save."""
    master = copy.deepcopy(model)
    master.to("float32")
    return master


def copy_to(master, model):
    """Write the master weights into `model`'s parameters, in their dtype (float16)."""
    for source, target in zip(master.parameters(), model.parameters()):
        target.data[...] = source.data


class GradScaler:
    """Dynamic loss scaling (see the module docstring).

    scale:            the factor the loss is multiplied by before backward
    growth_factor:    the scale's factor after growth_interval good steps in a row
    backoff_factor:   its factor after a step whose gradients overflowed (that step skipped)
    dynamic:          False keeps the scale fixed (an overflowing step is still skipped)
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, dynamic=True):
        init_scale = check_scale(init_scale, "GradScaler: init_scale")
        for name, value, ok in (("growth_factor", growth_factor, growth_factor > 1),
                                ("backoff_factor", backoff_factor, 0 < backoff_factor < 1),
                                ("growth_interval", growth_interval, growth_interval >= 1)):
            if not (ok and math.isfinite(value)):
                raise ValueError(f"GradScaler: bad {name} {value!r}")
        self.scale = init_scale                     # a float32 value (see the module docstring)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.dynamic = int(growth_interval), bool(dynamic)
        self.good_steps = 0

    def unscale(self, model, master):
        """master's gradients = model's (float16) gradients / scale, in float32; returns
        True when every one is finite (one read back from the device for all of them)."""
        finite = []
        for p, m in zip(model.parameters(), master.parameters()):
            if p.grad is None:
                m.grad = None
                continue
            g = p.grad.data.astype(m.data.dtype)
            g *= 1.0 / self.scale
            xp = backend.array_module(g)
            finite.append(xp.isfinite(g).all())
            if m.grad is None:
                m.grad = Tensor(g)
            else:
                m.grad.data[...] = g
        if not finite:
            return True
        xp = backend.array_module(finite[0])
        return bool(xp.stack(finite).all())

    def update(self, finite):
        """The scale after a step whose gradients were `finite` (True) or not; returns what
        changed, "backoff" or "growth", or None."""
        if not finite:
            self.good_steps = 0
            if self.dynamic:
                product = np.float32(self.scale) * np.float32(self.backoff_factor)
                self.scale = max(float(product), FLOAT32_TINY)
                return "backoff"
            return None
        self.good_steps += 1
        if self.dynamic and self.good_steps >= self.growth_interval:
            self.good_steps = 0
            with np.errstate(over="ignore"):
                product = np.float32(self.scale) * np.float32(self.growth_factor)
            if np.isfinite(product):                 # else the scale stays, as PyTorch's
                self.scale = float(product)
                return "growth"
        return None

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state):
        """Restore `state_dict()`'s values; a ValueError for a loss scale outside float32's
        normal range (0, NaN, inf: no step could be taken with it) or a bad step count."""
        scale = check_scale(state["scale"], "the saved loss scale")
        good_steps = validate.integer("the saved loss scale's good_steps", state["good_steps"],
                                      minimum=0)
        self.scale, self.good_steps = scale, good_steps
