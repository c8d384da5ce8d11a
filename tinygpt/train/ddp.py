"""Data parallelism over the ranks of a process group, each running the training loop on
batches of its own (floor 6). Imports: autograd, data (the batch stream's key), the
standard library, numpy; nccl.py on a GPU.

With N ranks each taking B rows a step, the step's batch is the union of N * B rows, and
the gradient of its mean loss is the mean of the ranks' gradients:

    loss = (1/N) sum_r loss_r        so        dloss/dw = (1/N) sum_r dloss_r/dw

where loss_r is rank r's mean loss over its B rows. Each rank runs forward and backward on
its rows (its micro-batches, as one process would), then one all-reduce sums the flat
buffer holding every gradient scaled by 1/N, and the rank's gradients become views of the
sum. Every rank then clips and takes the same optimizer step on the same numbers, so the
parameters stay equal everywhere without being sent again (tested bit for bit at every
checkpoint: `fingerprint`).

The buffer: [each trainable parameter's gradient, flattened, in `parameters()` order | the
loss]; its dtype is the parameters' (float32, or float64 in the tests, where 2 ranks x B
rows match 1 process x 2B rows to 1e-10). On a GPU it lives on the GPU and NCCL reduces
it there (`nccl.py`): nothing is copied to the host, and the loss is read when logged.

Before the all-reduce the ranks exchange a small status array on the host: each rank's
"failed" and "asked to stop" flags, and which parameters got a gradient. So a rank whose
forward or backward raised makes every rank raise its error, naming it (nobody is left
waiting inside an all-reduce), a Ctrl-C stops every rank after the same iteration, and a
parameter no rank's batch reached (an unused expert) keeps no gradient, as in one process.
"""

import hashlib
import pickle

import numpy as np

from ..autograd import backend
from ..autograd.tensor import Tensor
from ..data.batches import BATCH_STREAM
from .distributed import DistributedError, rank_seed
from .parallel_api import DataParallelBase

STOP, FAILED = 1, 2         # a rank's status bits
DROPOUT_STREAM = 5          # spawn key of each rank's own dropout (and other random) stream


class DistributedDataParallel(DataParallelBase):
    """Forward and backward of each rank's own batches, gradients averaged over the group.

        ddp = DistributedDataParallel(model, group, local_step)
        loss = ddp.forward_backward(batches)    # every rank: the same averaged .grad
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    model:          the rank's model; rank 0's parameters are copied to every rank here.
    group:          the `ProcessGroup` (distributed.py).
    local_step:     fn(batches) -> this rank's mean loss over its micro-batches (a float,
                    or a 0-d Tensor on a GPU), their gradients left in `.grad`.
    stop_requested: fn() -> whether this rank was asked to stop (Ctrl-C); after each step
                    `stopping` lists the ranks that were, the same list on every rank.
    communicator:   what reduces the gradient buffer: the group itself on the CPU; on a
                    GPU by default an NCCL communicator on it (`nccl.NCCLCommunicator`).
    """

    def __init__(self, model, group, local_step, stop_requested=None, communicator=None):
        self.model, self.group, self.local_step = model, group, local_step
        self.stop_requested = stop_requested or (lambda: False)
        self.world_size = group.world_size
        self.stopping = []
        every = list(model.parameters())
        self.params = [p for p in every if p.requires_grad]
        if not self.params:
            raise ValueError("DistributedDataParallel needs at least one parameter that "
                             "requires a gradient")
        dtypes = {p.data.dtype for p in self.params}
        devices = {backend.device_of(p.data) for p in every}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"the parameters must share one dtype and one device to be "
                             f"reduced in one buffer, got {sorted(map(str, dtypes))} on "
                             f"{sorted(devices)}")
        self.device = devices.pop()
        self.xp = backend.array_module(self.params[0].data)
        if communicator is None:
            communicator = group
            if self.device != "cpu":
                from .nccl import NCCLCommunicator
                communicator = NCCLCommunicator(group)
        self.communicator = communicator
        self.offsets = np.cumsum([0] + [p.data.size for p in self.params])
        self.buffer = self.xp.zeros(int(self.offsets[-1]) + 1, dtype=dtypes.pop())
        self.broadcast_parameters(every)

    def broadcast_parameters(self, params):
        """Copy rank 0's values of `params` into every rank's (one buffer per dtype)."""
        for dtype in sorted({str(p.data.dtype) for p in params}):
            same = [p for p in params if str(p.data.dtype) == dtype]
            flat = self.xp.concatenate([p.data.reshape(-1) for p in same])
            self.communicator.broadcast_(flat, root=0, what="the parameters' broadcast")
            start = 0
            for p in same:
                p.data[...] = flat[start:start + p.data.size].reshape(p.data.shape)
                start += p.data.size

    # --- one step ---------------------------------------------------------------------------
    def forward_backward(self, batches):
        error = None
        try:
            loss = self.local_step(batches)
        except Exception as exc:  # noqa: BLE001 - every rank raises it, below
            error, loss = exc, 0.0
        n = len(self.params)
        status = np.zeros(self.world_size + n, dtype=np.int64)
        status[self.group.rank] = (FAILED if error is not None else 0) | (
            STOP if self.stop_requested() else 0)
        status[self.world_size:] = [p.grad is not None for p in self.params]
        self.group.all_reduce_(status, what="the step's status exchange")
        codes, reached = status[:self.world_size], status[self.world_size:]
        self.stopping = [int(r) for r in np.flatnonzero(codes & STOP)]
        failed = [int(r) for r in np.flatnonzero(codes & FAILED)]
        if failed:
            self.model.zero_grad(set_to_none=True)
            raise shared_error(self.group, failed, error)
        return self._reduce(loss, reached)

    def _reduce(self, loss, reached):
        """All-reduce the gradients (each scaled by 1/N) and the loss; the gradients become
        views of the sum. Returns the mean loss."""
        xp, buffer, scale = self.xp, self.buffer, 1.0 / self.world_size
        for p, start, end in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            part = buffer[start:end]
            if p.grad is None:
                part[...] = 0
            else:
                xp.multiply(p.grad.data.reshape(-1), scale, out=part)
        if isinstance(loss, Tensor):
            buffer[-1:] = loss.data.reshape(1) * scale      # stays on the device
        else:
            buffer[-1] = loss * scale
        self.communicator.all_reduce_(buffer, what="the gradients' all-reduce")
        for p, start, end, count in zip(self.params, self.offsets[:-1], self.offsets[1:],
                                        reached):
            p.grad = Tensor(buffer[start:end].reshape(p.data.shape)) if count else None
        if isinstance(loss, Tensor):
            return Tensor(buffer[-1].copy())
        return float(buffer[-1])

    def close(self):
        """Release the communicator (the group itself stays open for its owner)."""
        if self.communicator is not self.group and self.communicator is not None:
            self.communicator.close()
        self.communicator = None


# --- failures shared by every rank ----------------------------------------------------------
def shared_error(group, failed, error):
    """The exception every rank raises when ranks `failed` (in rank order) raised, this
    rank's being `error` (or None): the first failed rank's error, which it sends to the
    others, with "rank r: " before its message. Its `collective` attribute is True: every
    rank raises it at the same point, so rank 0 alone needs to report it."""
    first = failed[0]
    sent = group.broadcast(portable(error) if group.rank == first else None, root=first,
                           what=f"rank {first}'s error")
    return _first_error(group, failed, error, sent)


def agree(group, error, what):
    """Make every rank's `error` (an exception, or None) known to all: when any is not None,
    every rank raises the first one's as `shared_error` does. `what` names the collective
    (what the ranks were doing) in a watchdog's message."""
    if group.world_size == 1:
        if error is not None:
            raise error
        return
    errors = group.all_gather(None if error is None else portable(error), what=what)
    failed = [r for r, e in enumerate(errors) if e is not None]
    if failed:
        raise _first_error(group, failed, error, errors[failed[0]])


def _first_error(group, failed, error, sent):
    first = failed[0]
    raised = error if group.rank == first else sent
    others = (f" (ranks {', '.join(map(str, failed))} failed; the first one's error:)"
              if len(failed) > 1 else "")
    if raised.args and isinstance(raised.args[0], str):
        raised.args = (f"rank {first}{others}: {raised.args[0]}",) + raised.args[1:]
    raised.collective = True
    return raised


def portable(error):
    """A copy of `error` that can travel to another rank: itself pickled and read back
    when that works and its message is a string, else a DistributedError carrying its
    type and message."""
    try:
        copy = pickle.loads(pickle.dumps(error))
        if copy.args and isinstance(copy.args[0], str):
            return copy
    except Exception:  # noqa: BLE001 - anything that does not pickle is described instead
        pass
    return DistributedError(f"{type(error).__name__}: {error}")


# --- each rank's own streams, in checkpoints ------------------------------------------------
def rank_streams(seed, rank):
    """(batch seed, random seed) of `rank` in a run seeded `seed`: rank 0 keeps the run's
    own (a one-rank run is a single process's), rank r > 0 draws from its spawns."""
    if rank == 0:
        return seed, None
    return rank_seed(seed, rank, BATCH_STREAM), rank_seed(seed, rank, DROPOUT_STREAM)


def rank_state(sampler):
    """This rank's stream states: its batch sampler's and its random generators'."""
    return {"sampler": sampler.state_dict(), "rng": backend.get_rng_state(),
            "cuda_rng": backend.get_rng_state("cuda")}


def load_rank_state(state, sampler):
    """Continue this rank's streams from `rank_state`'s dict."""
    sampler.load_state_dict(state["sampler"])
    backend.set_rng_state(state["rng"])
    backend.set_rng_state(state["cuda_rng"], "cuda")


def gather_rank_states(group, sampler, saved=()):
    """Every rank's stream states, gathered for rank 0's checkpoint: the list for ranks
    1, 2, ... (rank 0's are the checkpoint's own fields). Entries of `saved` (a resumed
    checkpoint's list) for ranks this run lacks are kept, so that a later run with more
    ranks continues their streams rather than replaying new ones."""
    states = group.all_gather(rank_state(sampler), what="the ranks' stream states")[1:]
    return states + list(saved[len(states):])


def fingerprint(model, optimizer):
    """sha256 of the parameters and the optimizer's state, to check that every rank holds
    the same ones (16 hex digits)."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(backend.to_numpy(p.data).tobytes())
    state = optimizer.state_dict()["state"]
    for index in sorted(state):
        for name in sorted(state[index]):
            digest.update(name.encode())
            digest.update(np.asarray(state[index][name]).tobytes())
    return digest.hexdigest()[:16]


def check_same_settings(group, settings):
    """Raise ValueError naming each rank whose `settings` (a dict: the training config, the
    data's fingerprint) differ from rank 0's, and how."""
    if group.world_size == 1:
        return
    every = group.all_gather(settings, what="the settings' check")
    problems = []
    for rank, theirs in enumerate(every[1:], start=1):
        keys = sorted(set(theirs) | set(every[0]))
        differ = [f"{k} {theirs.get(k)!r} (rank 0: {every[0].get(k)!r})" for k in keys
                  if theirs.get(k) != every[0].get(k)]
        if differ:
            problems.append(f"rank {rank} has " + ", ".join(differ))
    if problems:
        error = ValueError("the ranks of a run must train with the same settings and data: "
                           + "; ".join(problems))
        error.collective = True
        raise error


def check_same_state(group, model, optimizer, when):
    """Raise DistributedError naming the ranks whose parameters or optimizer moments
    differ from rank 0's (`when` says at which point, for the message)."""
    if group.world_size == 1:
        return
    prints = group.all_gather(fingerprint(model, optimizer), what="the state check")
    differ = [r for r, f in enumerate(prints) if f != prints[0]]
    if differ:
        error = DistributedError(
            f"{when}, the parameters or optimizer state of rank(s) "
            f"{', '.join(map(str, differ))} differ from rank 0's (a stale checkpoint copy "
            "on that machine, or a non-deterministic reduction?)", differ)
        error.collective = True
        raise error
