"""ZeRO stage 1 over the ranks of an MPI launch: AdamW's moments sharded, each rank
updating its shard (floor 6). Imports: numpy, autograd (backend, reference_ops_enabled),
optim (AdamW's update functions), train.ddp.

`mpiexec -n N python -m tinygpt train --zero 1`. Plain data parallelism (ddp.py) gives
every rank the whole AdamW state (m and v: 2 P numbers) and the whole update. Here the P
trainable numbers are laid out as one flat vector, in the optimizer's order (its decayed
group, then its undecayed one), padded to N pieces of S = ceil(P / N); rank r owns the
piece [r S, (r + 1) S) and keeps m and v for it alone. A step:

    1. backward on the rank's own rows, as in ddp.py (the status exchange first, so a rank
       that failed is named on every rank);
    2. reduce-scatter of the flat gradient, each rank's scaled by 1/N: rank r receives
       the sum over the ranks of its piece, the averaged gradient there (MPI's
       Reduce_scatter_block: half the bytes of an all-reduce); every `.grad` is then
       freed, so a rank holds the gradient of its piece only until the next backward;
    3. clipping by the global norm: each rank's sum of squares of its piece, summed over
       the ranks by an all-reduce of one number, gives ||g|| = sqrt(sum); every piece is
       scaled by max_norm / (||g|| + 1e-6) when that is below 1 (clip_grad_norm_'s rule);
    4. AdamW on the piece: for each stretch of the piece inside one parameter group (and
       of parameters at the same step count), AdamW's own update (adamw_reference under
       `tg.use_reference_ops()`, else adamw_fast's folded one) with that group's
       lr, betas, eps and weight decay, so the decay groups hold element by element;
       a parameter no rank's batch reached is not updated, as AdamW skips it;
    5. all-gather of the pieces of the new weights (the other half of the all-reduce's
       bytes), copied into every parameter: the weights stay whole and equal everywhere.

Bytes a rank holds for P float32 parameters: the weights 4P, the gradients 4P during
backward (4P/N after step 2), m and v 8P/N (docs/scaling.md has the memory model). The
elementwise arithmetic is plain data parallelism's; the global norm is summed in another
order (by pieces, not by parameters), so ZeRO equals ddp.py to rounding (1e-10 in
float64 after 20 steps: tests/train/test_zero.py), not bit for bit.

Checkpoints hold AdamW's usual state: `state_dict()` gathers the pieces of every rank
(a collective: every rank calls it) into each parameter's m and v, so a run saved with
--zero 1 resumes with any number of ranks, with or without ZeRO, and a plain checkpoint
resumes with --zero 1 (`load_state_dict` keeps this rank's piece).

Not offered: GPUs (the pieces travel by MPI on the host), mixed precision (its float32
master weights and loss scale are not sharded), forked processes and one rank (nothing
to shard over), --stats (it reads each parameter's whole gradient, which no rank keeps),
stage 2 as its own setting (step 2 frees the whole gradients already; sharding them
during backward needs gradients reduced by buckets as they are made).
"""

import math

import numpy as np

from ..autograd import backend, reference_ops_enabled
from ..optim.adamw import adamw_reference
from ..optim.adamw_fast import adamw_folded, coefficients
from .ddp import DistributedDataParallel


class ZeroAdamW:
    """AdamW with its moments sharded over the ranks of `group` (ZeRO stage 1).

    optimizer: an AdamW whose parameter groups (and hyper-parameters, which a schedule
               changes between steps) this one updates; its own state stays empty.
    group:     the run's process group (distributed.py), of 2 ranks or more.
    max_norm:  clip the gradients' global L2 norm to it in `step` (0: no clipping);
               no rank holds the whole gradient, so clip_grad_norm_ cannot.
    """

    def __init__(self, optimizer, group, max_norm=0.0):
        if group.world_size < 2:
            raise ValueError(f"ZeRO shards the optimizer state over 2 or more ranks, this "
                             f"run has {group.world_size}: start it with mpiexec -n N")
        self.inner, self.group, self.max_norm = optimizer, group, float(max_norm)
        self.param_groups = optimizer.param_groups
        self.params = [p for g in self.param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("ZeRO needs at least one parameter to update")
        dtypes = {p.data.dtype for p in self.params}
        devices = {backend.device_of(p.data) for p in self.params}
        if len(dtypes) != 1 or devices != {"cpu"}:
            raise ValueError(f"ZeRO updates parameters of one dtype on the CPU, got "
                             f"{sorted(map(str, dtypes))} on {sorted(devices)}")
        dtype = dtypes.pop()
        self.group_index = [i for i, g in enumerate(self.param_groups) for _ in g["params"]]
        self.offsets = np.cumsum([0] + [p.data.size for p in self.params])
        total, n = int(self.offsets[-1]), group.world_size
        self.shard_size = -(-total // n)
        self.lo = min(group.rank * self.shard_size, total)     # this rank's piece: lo..hi
        self.hi = min(self.lo + self.shard_size, total)
        # The flat vector of every rank's pieces: gradients before the reduce-scatter,
        # weights for the all-gather.
        self.buffer = np.zeros(self.shard_size * n, dtype=dtype)
        self.grad = np.zeros(self.shard_size, dtype=dtype)         # this piece's gradient
        self.exp_avg = np.zeros(self.shard_size, dtype=dtype)      # m of this piece
        self.exp_avg_sq = np.zeros(self.shard_size, dtype=dtype)   # v of this piece
        self.scratch = np.empty(self.shard_size, dtype=dtype)
        self.steps = np.zeros(len(self.params), dtype=np.int64)    # AdamW's t per parameter
        self.reached = None         # per parameter: got a gradient this step (after reduce)

    # --- the step -----------------------------------------------------------------------
    def reduce_gradients(self, reached, scale):
        """Step 2 of the module docstring: every parameter's `.grad` (zeros for None)
        times `scale` into the flat buffer, reduce-scattered into this rank's piece; the
        `.grad`s freed. reached: per parameter of `params`, whether any rank's batch gave
        it a gradient."""
        buffer = self.buffer
        for p, start, end in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            part = buffer[start:end]
            if p.grad is None:
                part[...] = 0
            else:
                np.multiply(p.grad.data.reshape(-1), scale, out=part)
            p.grad = None
        buffer[self.offsets[-1]:] = 0
        self.group.reduce_scatter_(buffer, self.grad, what="the gradients' reduce-scatter")
        self.reached = [bool(r) for r in reached]

    def step(self):
        """Steps 3 to 5: clip by the global norm, update this rank's piece, all-gather the
        weights. Nothing happens without reduced gradients."""
        if self.reached is None:
            return
        grad, lo, hi = self.grad, self.lo, self.hi
        if self.max_norm > 0:
            mine = grad[:hi - lo].astype(np.float64)
            total = np.array([np.dot(mine, mine)])
            self.group.all_reduce_(total, what="the gradient norm's all-reduce")
            coef = self.max_norm / (math.sqrt(total[0]) + 1e-6)
            if coef < 1.0 or math.isnan(coef):
                grad *= coef
        reached = np.asarray(self.reached)
        self.steps[reached] += 1
        for p, start, end in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            a, b = max(start, lo), min(end, hi)
            if a < b:       # this rank's stretch of p, to update in the flat buffer
                self.buffer[a:b] = p.data.reshape(-1)[a - start:b - start]
        for a, b, i in self.stretches():
            self._update(self.param_groups[self.group_index[i]], int(self.steps[i]),
                         slice(a, b), slice(a - lo, b - lo))
        self.group.all_gather_(self.buffer, what="the weights' all-gather")
        for p, start, end, got in zip(self.params, self.offsets[:-1], self.offsets[1:],
                                      self.reached):
            if got:
                p.data[...] = self.buffer[start:end].reshape(p.data.shape)
        self.reached = None

    def stretches(self):
        """(a, b, i): the stretches [a, b) of this rank's piece (flat indices) that one
        update covers: parameters next to each other in one group, all reached this
        step and at the same step count; i is the first one's index."""
        out = []
        for i, (start, end) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            a, b = max(int(start), self.lo), min(int(end), self.hi)
            if a >= b or not self.reached[i]:
                continue
            if out and out[-1][1] == a and self.group_index[out[-1][2]] == \
                    self.group_index[i] and self.steps[out[-1][2]] == self.steps[i]:
                out[-1] = (out[-1][0], b, out[-1][2])
            else:
                out.append((a, b, i))
        return out

    def _update(self, group, t, flat, mine):
        """AdamW's update (step t, `group`'s settings) of the weights buffer[flat] with
        this piece's gradient and moments [mine]."""
        w, g = self.buffer[flat], self.grad[mine]
        m, v = self.exp_avg[mine], self.exp_avg_sq[mine]
        if reference_ops_enabled():
            beta1, beta2 = group["betas"]
            adamw_reference(np, w, g, m, v, t, float(group["lr"]), float(beta1), float(beta2),
                            float(group["eps"]), float(group["weight_decay"]))
        else:
            adamw_folded(np, w, g, m, v, self.scratch[mine], *coefficients(group, t))

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: the parameters' and this rank's reduced piece."""
        self.reached = None
        self.inner.zero_grad(set_to_none=set_to_none)

    # --- memory, save and load ------------------------------------------------------------
    def state_bytes(self):
        """Bytes of optimizer state this rank holds: its pieces of m and v."""
        return int(self.exp_avg.nbytes + self.exp_avg_sq.nbytes)

    def whole_state_bytes(self):
        """Bytes of m and v for every parameter: what one rank would hold without ZeRO."""
        return int(2 * self.offsets[-1] * self.buffer.itemsize)

    def state_dict(self):
        """AdamW's state_dict of the whole run: every rank's pieces gathered (a collective:
        every rank calls it), each parameter's m and v whole, as one process's AdamW
        would save them."""
        whole = {}
        for name in ("exp_avg", "exp_avg_sq"):
            full = np.empty_like(self.buffer)       # every piece is filled by the gather
            full[self.group.rank * self.shard_size:][:self.shard_size] = getattr(self, name)
            whole[name] = self.group.all_gather_(full, what=f"the optimizer's {name} gather")
        saved = self.inner.state_dict()         # the groups; its own state is empty
        saved["state"] = {
            i: {"step": int(self.steps[i]),
                **{name: whole[name][start:end].reshape(p.data.shape)   # views: fresh
                   for name in ("exp_avg", "exp_avg_sq")}}
            for i, (p, start, end) in enumerate(zip(self.params, self.offsets[:-1],
                                                    self.offsets[1:])) if self.steps[i] > 0}
        return saved

    def load_state_dict(self, state_dict):
        """Restore AdamW's state_dict (of a run with any number of ranks, ZeRO or not):
        checked as AdamW checks it, then this rank keeps its piece of m and v."""
        self.inner.load_state_dict(state_dict)
        steps = np.zeros_like(self.steps)
        m, v = np.zeros_like(self.exp_avg), np.zeros_like(self.exp_avg_sq)
        for i, (p, start, end) in enumerate(zip(self.params, self.offsets[:-1],
                                                self.offsets[1:])):
            state = self.inner.state.get(p)
            if not state:
                continue
            steps[i] = state["step"]
            a, b = max(int(start), self.lo), min(int(end), self.hi)
            if a < b:
                m[a - self.lo:b - self.lo] = state["exp_avg"].reshape(-1)[a - start:b - start]
                v[a - self.lo:b - self.lo] = state["exp_avg_sq"].reshape(-1)[a - start:b - start]
        self.inner.state = {}
        self.steps, self.exp_avg, self.exp_avg_sq = steps, m, v


class ZeroDataParallel(DistributedDataParallel):
    """DistributedDataParallel whose gradients are reduce-scattered into `optimizer`'s
    pieces (a ZeroAdamW) instead of all-reduced: after `forward_backward` no parameter
    holds a `.grad`, and `optimizer.step()` clips, updates and gathers the weights."""

    def __init__(self, model, group, local_step, optimizer, stop_requested=None):
        super().__init__(model, group, local_step, stop_requested=stop_requested)
        self.buffer = None          # the all-reduce's buffer: the optimizer has its own
        self.optimizer = optimizer
        if {id(p) for p in self.params} != {id(p) for p in optimizer.params}:
            raise ValueError("ZeRO's optimizer must update exactly the model's trainable "
                             "parameters")

    def _reduce(self, loss, reached):
        counts = dict(zip(map(id, self.params), reached))
        scale = 1.0 / self.world_size
        self.optimizer.reduce_gradients([counts[id(p)] for p in self.optimizer.params], scale)
        total = np.array([float(loss) * scale], dtype=self.optimizer.buffer.dtype)
        self.group.all_reduce_(total, what="the loss's all-reduce")
        return float(total[0])


def optimizer_state_bytes(optimizer):
    """Bytes of optimizer state this process holds: a ZeroAdamW's pieces, or the arrays of
    any optimizer's per-parameter state (AdamW's m and v)."""
    if isinstance(optimizer, ZeroAdamW):
        return optimizer.state_bytes()
    return int(sum(v.nbytes for state in optimizer.state.values() for v in state.values()
                   if hasattr(v, "nbytes") and getattr(v, "ndim", 0) > 0))
