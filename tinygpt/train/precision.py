"""Mixed precision in the training loop (floor 6): the float32 master copy the optimizer
updates and checkpoints save, the loss scaler's use, and its scale changes for the log.
Imports: numpy, optim (amp).

With dtype float16 the model computes in float16 while AdamW updates a float32 copy of
its weights (`master`): each loss is multiplied by the loss scale before backward (small
float16 gradients would underflow), the gradients are divided by it into the master's
float32 ones (`unscale`), a step whose gradients overflowed is skipped and the scale
backs off, and after the update the master is copied back into the float16 model. With
float32 or float64 every method here is the plain path: no copy, no scale.
"""

import numpy as np

from ..optim import GradScaler, copy_to, master_copy
from ..optim.amp import check_scale


class Precision:
    """A run's precision. master: the float32 weights (a model) or None; scaler: the
    GradScaler or None; events: the loss scale's changes not logged yet, each
    {"event": "loss_scale", "iter", "change", "scale", "previous"}."""

    def __init__(self, config):
        self.config = config
        self.master = self.scaler = None
        self.events = []

    def set_up(self, model):
        """Put `model` in the run's dtype; for float16 first take the float32 master copy
        and make the loss scaler (see tinygpt/optim/amp.py)."""
        cfg = self.config
        self.master = self.scaler = None
        if cfg.dtype == "float16":
            self.master = master_copy(model.to("float32"))
            self.scaler = GradScaler(init_scale=cfg.loss_scale,
                                     growth_interval=max(1, cfg.loss_scale_window),
                                     dynamic=cfg.loss_scale_window > 0)
        model.to(cfg.dtype)

    def weights(self, model):
        """What the optimizer updates and a checkpoint saves: the master, else `model`."""
        return self.master if self.master is not None else model

    def scaled_backward(self, loss, n_micro):
        """Mixed precision's backward of loss / n_micro: the loss first multiplied by the
        loss scale, so that small float16 gradients do not underflow."""
        # Gradients that overflow float16 are expected (the scaler sees them and skips the
        # step): no warning for them.
        with np.errstate(over="ignore", invalid="ignore"):
            (loss * (self.scaler.scale / n_micro)).backward()

    def unscale(self, model, optimizer, iter_num):
        """The float16 gradients, divided by the loss scale, into the master weights'
        float32 ones; the scale updated (its change kept in `events`). False when they
        overflowed: the step is skipped. True at once without mixed precision."""
        if self.master is None:
            return True
        finite = self.scaler.unscale(model, self.master)
        model.zero_grad()
        before = self.scaler.scale
        change = self.scaler.update(finite)
        if change is not None:
            self.events.append({"event": "loss_scale", "iter": iter_num, "change": change,
                                "scale": self.scaler.scale, "previous": before})
        if not finite:
            optimizer.zero_grad(set_to_none=True)
        return finite

    def copy_back(self, model):
        """After the update: the master's float32 weights into the float16 model."""
        if self.master is not None:
            copy_to(self.master, model)

    def state(self):
        """The checkpoint's entries for precision: {"grad_scaler": ...} or {}."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_state(self, meta, new_scale=False):
        """The saved scaler's state; with new_scale (--loss_scale given on resume) the
        run's loss scale replaces the saved one."""
        if self.scaler is not None:
            self.scaler.load_state_dict(meta["grad_scaler"])
            if new_scale:
                self.scaler.scale = check_scale(self.config.loss_scale, "loss_scale")
