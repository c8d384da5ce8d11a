"""AdamW on a GPU over flat buffers: one fused kernel per parameter group (floor 4).

Run parameter by parameter, AdamW's dozen array operations cost a GPU a dozen kernel
launches per parameter (some 1,800 for GPT-2's 148 tensors), each a few microseconds of
the host's time for a few microseconds of the GPU's. Here every parameter of the
optimizer lives in one flat buffer, and so do its two moments: on the first step (and
whenever a parameter's array has been replaced since) the parameters' values are copied
into the buffer and each `p.data` becomes a view of its part of it, as each moment in
`optimizer.state[p]` does. A step then gathers the gradients into one flat array (one
kernel) and applies `adamw_folded`'s update (adamw_fast.py) to every element of a run
of parameter groups with the same hyper-parameters in one fused kernel: two kernels for
a GPT's decayed and undecayed groups, one where every group agrees. The arithmetic per element is
`adamw_folded`'s, operation for operation.

The fused path needs every parameter of the optimizer to have a gradient of its dtype
and the same step count within a run; otherwise the step falls back to the update one
parameter at a time (`adamw_fast.update_one`), which gives the same numbers.
Imports: autograd (backend).
"""

from ..autograd import backend


def _adamw_step(xp, w, g, m, v, decay, beta1, beta2, eps, step_size):
    """`adamw_folded`'s update of w, m, v from g, in place, as one kernel (same
    operations)."""
    w *= decay                                                  # p <- p (1 - lr wd)
    m *= beta1
    m += g * (1.0 - beta1)                                      # m <- b1 m + (1 - b1) g
    v *= beta2
    v += g * g * (1.0 - beta2)                                  # v <- b2 v + (1 - b2) g^2
    w -= m / (xp.sqrt(v) + eps) * step_size


ADAMW_STEP = backend.fuse(_adamw_step, "adamw_step")


class FlatAdamW:
    """The flat buffers of one optimizer on one device, and its fused step."""

    def __init__(self):
        self.params = None          # the parameters, in the optimizer's order
        self.views = None           # (p.data view, exp_avg view, exp_avg_sq view) each
        self.w = self.m = self.v = None

    def step(self, optimizer, items, coefficients):
        """Update every parameter of `items` ((group, p, g) in the optimizer's order) with
        the folded `coefficients(group, t)`; returns False (nothing done) when the fused
        path does not apply."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(items) != len(params) or any(p is not q for (_, p, _), q in zip(items, params)):
            return False                # some parameter has no gradient this step
        dtype = params[0].dtype
        if any(p.dtype != dtype or g.dtype != dtype for _, p, g in items):
            return False
        states = [optimizer._state(p) for p in params]
        steps = {state.get("step", 0) for state in states}
        if len(steps) != 1:
            return False
        if not self._in_place(params, states):
            self._gather(params, states)
        xp = backend.array_module(self.w)
        g = xp.concatenate([g.reshape(-1) for _, _, g in items])
        t = steps.pop() + 1
        for state in states:
            state["step"] = t
        for start, end, folded in self._runs(optimizer, t, coefficients):
            ADAMW_STEP(self.w[start:end], g[start:end], self.m[start:end], self.v[start:end],
                       *folded)
        return True

    def _in_place(self, params, states):
        """True when the buffers still hold every parameter and moment."""
        if self.params is None or len(self.params) != len(params):
            return False
        return all(p is q and p.data is view[0] and state.get("exp_avg") is view[1]
                   and state.get("exp_avg_sq") is view[2]
                   for p, q, state, view in zip(params, self.params, states, self.views))

    def _gather(self, params, states):
        """Copy the parameters and moments (zeros where there are none yet) into new flat
        buffers and point every parameter and moment at its part."""
        xp = backend.array_module(params[0].data)
        self.w = xp.concatenate([p.data.reshape(-1) for p in params])
        moments = []
        for key in ("exp_avg", "exp_avg_sq"):
            moments.append(xp.concatenate([
                state[key].reshape(-1) if key in state else xp.zeros(p.data.size, p.dtype)
                for p, state in zip(params, states)]).astype(self.w.dtype, copy=False))
        self.m, self.v = moments
        self.params, self.views, start = list(params), [], 0
        for p, state in zip(params, states):
            end = start + p.data.size
            views = tuple(buffer[start:end].reshape(p.data.shape)
                          for buffer in (self.w, self.m, self.v))
            p.data, state["exp_avg"], state["exp_avg_sq"] = views
            state.setdefault("step", 0)
            self.views.append(views)
            start = end

    def _runs(self, optimizer, t, coefficients):
        """(start, end, coefficients) of each run of consecutive groups whose update has
        the same coefficients at step t."""
        runs, start = [], 0
        for group in optimizer.param_groups:
            end = start + sum(p.data.size for p in group["params"])
            folded = coefficients(group, t)
            if runs and runs[-1][2] == folded and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end, folded)
            elif end > start:
                runs.append((start, end, folded))
            start = end
        return runs
