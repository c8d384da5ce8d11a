"""What a run reports (floor 6): the JSON-lines log, the console lines, the losses a GPU
keeps until they are logged, --stats and the mixture-of-experts routing. Imports:
autograd (backend, Tensor), train.stats, the standard library.

log.jsonl holds one record a line: {"event": "eval", "iter", "train_loss", "val_loss"},
{"event": "train", "iter", "loss", "lr", "ms_per_iter", "tokens_per_s"} (plus "aux_loss"
and "dropped" with experts), the --stats records (stats.py) and the loss scale's changes
under mixed precision. ms/iter is measured over the iterations since the last mark,
evaluation excluded.

On a GPU each step's loss stays there, added to the sum of the losses not read back yet
(`keep_unread`): reading it each step would make the host wait for the GPU. It is read,
and checked, when it is logged and before each evaluation (`read_loss`, `check_unread`).
"""

import json
import math
import time

from ..autograd import backend
from ..autograd.tensor import Tensor
from .stats import StatsCollector


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


class Metrics:
    """The reports of one run. `log` receives each console line; `ckpt_path` is named by
    the error on a non-finite loss. stats: the --stats collector (on logged iterations),
    or None. unread, unread_from: on a GPU, the sum of the losses not read back yet (a
    0-d Tensor, or None) and the iteration it starts at."""

    def __init__(self, config, model, log, ckpt_path):
        self.config = config
        self.log = log
        self.ckpt_path = ckpt_path
        self.stats = StatsCollector(model) if config.stats else None
        self.unread = None
        self.unread_from = 0
        self.file = None

    def logs(self, it):
        """Whether iteration `it` writes a log line (and its statistics)."""
        return it % self.config.log_interval == 0 or it + 1 == self.config.max_iters

    # --- the start and the end of run() ---------------------------------------------------
    def announce(self, trainer):
        """The run's first console line: the model, the data and a step's size."""
        cfg, model = trainer.config, trainer.model
        ranks = trainer.group.world_size
        self.tokens_per_iter = (cfg.batch_size * cfg.block_size
                                * cfg.gradient_accumulation_steps * ranks)
        n_params = sum(p.numel() for p in model.parameters())
        trainable = model.num_parameters(only_trainable=True)
        self.log(f"model: {n_params / 1e6:.2f}M parameters"
                 + (f" ({trainable / 1e6:.2f}M trainable: LoRA rank {cfg.lora_rank})"
                    if cfg.lora_rank else "")
                 + (f" ({trainable / 1e6:.2f}M trainable: bottleneck adapters of width "
                    f"{cfg.adapter_size})" if cfg.adapter_size else "")
                 + f", {cfg.n_layer} layers, "
                 f"{cfg.n_head} heads, {cfg.n_embd} channels, vocabulary "
                 f"{model.config.vocab_size}; {len(trainer.train_data):,} training tokens; "
                 f"{self.tokens_per_iter:,} tokens per iteration"
                 + (f", each batch split over {trainer.processes} processes (--processes)"
                    if trainer.processes > 1 else "")
                 + (f", {cfg.batch_size} rows a step on each of {trainer.group.describe()}"
                    if ranks > 1 else ""))

    def begin(self, log_file, iter_num):
        """The run's records go to `log_file` from iteration `iter_num` on; the clock starts."""
        self.file = log_file
        self.start_time = time.perf_counter()
        self.start_iter = iter_num
        self.mark(iter_num)

    def mark(self, it):
        """Start the next ms/iter measurement at iteration `it`."""
        self.mark_time, self.mark_iter = time.perf_counter(), it

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def done(self, iter_num):
        elapsed = time.perf_counter() - self.start_time
        self.log(f"done: {iter_num - self.start_iter} iterations in {format_time(elapsed)}")

    # --- records --------------------------------------------------------------------------
    def evaluation(self, it, losses):
        """Log an evaluation; returns its history entry."""
        entry = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"]}
        self.file.write(json.dumps({"event": "eval", **entry}) + "\n")
        self.file.flush()
        self.log(f"step {it}: train loss {losses['train']:.4f}, "
                 f"val loss {losses['val']:.4f}")
        return entry

    def scale_events(self, events):
        """Log mixed precision's loss scale changes, and forget them."""
        for event in events:
            self.file.write(json.dumps(event) + "\n")
            self.log(f"iter {event['iter']}: loss scale {event['previous']:g} -> "
                     f"{event['scale']:g} ("
                     + ("the gradients overflowed: step skipped)"
                        if event["change"] == "backoff"
                        else f"{self.config.loss_scale_window} steps without overflow)"))
        events.clear()

    def train(self, it, iter_num, loss, lr, model):
        """Log iteration `it` (iter_num: the iterations done), whose loss is `loss` (a
        float, or on a GPU a 0-d Tensor, read here with every unread loss)."""
        cfg = self.config
        loss = self.read_loss(loss, iter_num)
        now = time.perf_counter()
        dt = (now - self.mark_time) / max(1, iter_num - self.mark_iter)
        self.mark_time, self.mark_iter = now, iter_num
        done = iter_num - self.start_iter
        eta = (now - self.start_time) / done * (cfg.max_iters - iter_num)
        record = {"event": "train", "iter": it, "loss": loss, "lr": lr,
                  "ms_per_iter": dt * 1e3, "tokens_per_s": self.tokens_per_iter / dt}
        experts = expert_stats(model)
        record.update(experts)
        self.file.write(json.dumps(record) + "\n")
        stats = self.stats.pop() if self.stats is not None else None
        if stats is not None:
            self.file.write(json.dumps(stats) + "\n")
        self.file.flush()
        self.log(f"iter {it}/{cfg.max_iters} ({100 * iter_num / cfg.max_iters:.0f}%): "
                 f"loss {loss:.4f}, lr {lr:.2e}, {dt * 1e3:.1f} ms/iter, "
                 f"{self.tokens_per_iter / dt:,.0f} tok/s, eta {format_time(eta)}"
                 + (f"; experts: aux loss {experts['aux_loss']:.4f}, "
                    f"{experts['dropped']} dropped" if experts else ""))

    # --- the losses -----------------------------------------------------------------------
    def keep_unread(self, loss, iter_num):
        """Add a step's loss on the GPU to the ones not read back yet."""
        if self.unread is None:
            self.unread, self.unread_from = loss, iter_num
        else:
            self.unread = self.unread + loss        # a NaN or an inf anywhere stays one
        return loss

    def read_loss(self, loss, iter_num):
        """A step's loss as a float, and every unread loss checked, in one transfer."""
        if not isinstance(loss, Tensor):
            return loss
        values = backend.to_numpy(backend.array_module(loss.data).stack(
            [loss.data, self.unread.data]))
        self.check_unread(iter_num, float(values[1]))
        return float(values[0])

    def check_unread(self, iter_num, total=None):
        """Raise TrainingError when a loss since the last check was not finite (`total`:
        their sum, read back here when not given)."""
        if self.unread is None:
            return
        if total is None:
            total = self.unread.item()
        first, self.unread = self.unread_from, None
        if not math.isfinite(total):
            raise TrainingError(
                f"the loss became {total} in iterations {first}-{iter_num - 1} (on a "
                f"GPU the loss is read when logged); training stopped and the last good "
                f"checkpoint ({self.ckpt_path}) was kept. Try a lower --learning_rate or "
                "--grad_clip")

    def check_loss(self, value, iter_num):
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at iteration {iter_num}; training stopped and "
                f"the last good checkpoint ({self.ckpt_path}) was kept. Try a lower "
                "--learning_rate or --grad_clip")


def expert_stats(model):
    """The last step's routing in the mixture-of-experts layers (this process's part of
    the batch), for the log: {"aux_loss", "dropped"}, or {} without experts."""
    stats = model.moe_stats()
    if stats is None:
        return {}
    return {"aux_loss": float(stats["aux_loss"].item()), "dropped": int(stats["dropped"])}


def format_time(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
