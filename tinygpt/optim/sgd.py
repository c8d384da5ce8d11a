"""Stochastic gradient descent with momentum, PyTorch's algorithm (floor 4).

For each parameter p with gradient g:

    d <- g + weight_decay * p                     (L2 penalty, added to the gradient)
    b <- d                         on the first step
    b <- momentum * b + (1 - dampening) * d       on later steps (b: momentum buffer)
    d <- d + momentum * b          with nesterov, else  d <- b      (when momentum != 0)
    p <- p - lr * d

Imports: autograd (backend), optim.optimizer.
"""

from ..autograd import backend
from .optimizer import Optimizer, _check_number


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False).

    State per parameter: "momentum_buffer" (only when momentum != 0).

    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_number("lr", group["lr"])
        _check_number("momentum", group["momentum"])
        _check_number("dampening", group["dampening"])
        _check_number("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov momentum needs momentum > 0 and dampening = 0, got momentum="
                f"{group['momentum']} and dampening={group['dampening']}")

    def _update(self, group, p, g, state, scratch):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        xp = backend.array_module(p.data)
        w = p.data
        # d = g + wd p, built in scratch; g itself is only read, never written.
        d = g
        if weight_decay != 0.0:
            xp.multiply(w, weight_decay, out=scratch)
            scratch += g
            d = scratch
        if momentum != 0.0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()      # b = d
            else:
                buf *= momentum
                if dampening == 0.0:
                    buf += d                                    # b = m b + d
                else:
                    xp.multiply(d, 1.0 - dampening, out=scratch)
                    buf += scratch                              # b = m b + (1 - dampening) d
            if not group["nesterov"]:
                d = buf
        xp.multiply(d, lr, out=scratch)
        w -= scratch                                            # p = p - lr d
        if momentum != 0.0 and group["nesterov"]:
            # Nesterov: p = p - lr (d + m b), done as a second in-place step so that no
            # temporary is needed (nesterov implies dampening = 0, so d above was intact).
            xp.multiply(buf, lr * momentum, out=scratch)
            w -= scratch
