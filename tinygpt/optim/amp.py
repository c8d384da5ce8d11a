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

Sums over many elements (layer norm, softmax, cross-entropy) run in float32 inside the ops
(see tinygpt/autograd/ops/fused.py), and the loss is float32.
"""

import copy
import math

from ..autograd import backend
from ..autograd.tensor import Tensor


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
        for name, value, ok in (("init_scale", init_scale, init_scale > 0),
                                ("growth_factor", growth_factor, growth_factor > 1),
                                ("backoff_factor", backoff_factor, 0 < backoff_factor < 1),
                                ("growth_interval", growth_interval, growth_interval >= 1)):
            if not (ok and math.isfinite(value)):
                raise ValueError(f"GradScaler: bad {name} {value!r}")
        self.scale = float(init_scale)
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
                self.scale *= self.backoff_factor
                return "backoff"
            return None
        self.good_steps += 1
        if self.dynamic and self.good_steps >= self.growth_interval:
            self.good_steps = 0
            self.scale *= self.growth_factor
            return "growth"
        return None

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state):
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
