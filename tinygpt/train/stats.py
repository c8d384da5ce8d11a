"""Training statistics: gradient norms, update-to-data ratios and block activations
(floor 6), the instruments of the makemore lectures for a whole GPT. Imports: autograd
(backend).

With `TrainConfig.stats` on (`python -m tinygpt train --stats true`), every logged
iteration (those that write a "train" line, every `log_interval`) adds one record to
out_dir/log.jsonl:

    {"event": "stats", "iter": it,
     "params": {name: {"grad_norm": g, "update_ratio": r}, ...},
     "activations": {"transformer.h.0": {"mean": m, "std": s}, ...}}

- grad_norm = ||dL/dp||, the L2 norm of a parameter's gradient as backward left it
  (summed over the micro-batches, before gradient clipping: clipping scales every
  gradient by one factor, so the raw norms show which tensor is out of line).
- update_ratio = ||p_after - p_before|| / ||p_before||, the parameter's actual change
  across `optimizer.step()` relative to its size (Karpathy's update:data ratio; about
  1e-3 is the healthy rule of thumb, a log10 of -3). The change is measured, not
  predicted from lr * grad, so AdamW's normalisation and weight decay are in it. Norms
  rather than the lecture's standard deviations, because a LayerNorm weight starts as
  all ones (std 0) and would divide by zero. null when ||p_before|| is 0 (a bias on its
  first step), and grad_norm null when the parameter received no gradient.
- mean and std of each transformer block's output (the residual stream after that
  block), over every element of every micro-batch of the iteration; with the batch split
  over processes (`TrainConfig.processes`), over the main process's part of it (the
  gradient norms are of the whole batch's summed gradient).

Collecting costs nothing on the other iterations: the forward hooks return at once
unless a logged iteration is in progress, and the parameter copies (one per parameter,
for the update ratio) are made only on logged iterations. Nothing here draws random
numbers or writes to the model, so a run with statistics is bit-identical to one without.
"""

import json
import math

from ..autograd import backend


class StatsCollector:
    """Collects one "stats" record per logged iteration of a training step.

    The trainer calls, on a logged iteration only:
        start(it)       before the forward passes (turns the block hooks on);
        before_update() after backward, before clipping and optimizer.step();
        after_update()  after optimizer.step(); the record is then in `pop()`.

    >>> stats = StatsCollector(model)
    >>> stats.start(0); loss.backward(); stats.before_update(); opt.step(); stats.after_update()
    >>> stats.pop()["params"]["transformer.wte.weight"]
    {'grad_norm': 1.93, 'update_ratio': 0.0061}
    """

    def __init__(self, model):
        self.params = list(model.named_parameters())
        self.blocks = _blocks(model)
        self._active = False
        self._it = None
        self._moments = {}        # block name -> [sum, sum of squares, count] (float)
        self._before = None       # parameter name -> (grad norm, copy of the data)
        self._record = None
        self._handles = [block.register_forward_hook(self._hook(name))
                         for name, block in self.blocks]

    def _hook(self, name):
        def hook(module, inputs, output):
            if not self._active:
                return None                       # the fast path of every other iteration
            x = output.data
            xp = backend.array_module(x)
            # Sums in float64: a float32 sum of squares over B*T*C elements loses digits.
            total = float(x.sum(dtype=xp.float64))
            squares = float((x.astype(xp.float64) ** 2).sum())
            acc = self._moments.setdefault(name, [0.0, 0.0, 0])
            acc[0] += total
            acc[1] += squares
            acc[2] += x.size
            return None                           # None: the output is left unchanged
        return hook

    def start(self, it):
        """A logged iteration `it` begins: record the blocks' outputs from now on."""
        self._active = True
        self._it = it
        self._moments = {}
        self._before = None
        self._record = None

    def before_update(self):
        """Gradients are complete: note their norms and copy each parameter."""
        self._active = False                      # the forwards of this iteration are done
        self._before = {}
        for name, p in self.params:
            grad = None if p.grad is None else _norm(p.grad.data)
            self._before[name] = (grad, p.data.copy())

    def after_update(self):
        """The optimizer has stepped: build the record of this iteration."""
        if self._before is None:
            raise RuntimeError("StatsCollector.after_update() without before_update()")
        params = {}
        for name, p in self.params:
            grad, old = self._before[name]
            size = _norm(old)
            ratio = _norm(p.data - old) / size if size > 0 else None
            params[name] = {"grad_norm": grad, "update_ratio": ratio}
        activations = {}
        for name, _ in self.blocks:
            if name not in self._moments:
                continue
            total, squares, count = self._moments[name]
            mean = total / count
            # E[x^2] - mean^2 can round below zero when the spread is tiny.
            std = math.sqrt(max(squares / count - mean * mean, 0.0))
            activations[name] = {"mean": mean, "std": std}
        self._record = {"event": "stats", "iter": self._it, "params": params,
                        "activations": activations}
        self._before = None
        self._moments = {}

    def pop(self):
        """The finished record (a dict) or None; clears it."""
        record, self._record = self._record, None
        return record

    def close(self):
        """Remove the forward hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _blocks(model):
    """(name, module) of each transformer block: the children of `transformer.h`."""
    try:
        blocks = model.transformer.h
    except AttributeError:
        raise TypeError(
            f"StatsCollector expects a GPT with transformer.h (its blocks), got "
            f"{type(model).__name__}") from None
    return [(f"transformer.h.{i}", block) for i, block in enumerate(blocks)]


def _norm(x):
    """The L2 norm of an array as a Python float, accumulated in float64."""
    xp = backend.array_module(x)
    return math.sqrt(float((x.astype(xp.float64) ** 2).sum()))


def read_log(path):
    """The records of a training log (JSON lines) grouped by event:
    {"train": [...], "eval": [...], "stats": [...]}, each list in file order.

    Lines that are not JSON objects (a line cut short by an interrupted run) are skipped.
    Raises FileNotFoundError when the file is missing and ValueError when it holds no
    record.
    """
    grouped = {"train": [], "eval": [], "stats": []}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and record.get("event") in grouped:
                grouped[record["event"]].append(record)
    if not any(grouped.values()):
        raise ValueError(
            f"{path} holds no training records (expected JSON lines with an \"event\" of "
            f"\"train\", \"eval\" or \"stats\")")
    return grouped
