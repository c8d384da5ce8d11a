"""The training loop (floor 6): a step is forward and backward, clip, AdamW, log; a run
is the loop, evaluation and saving. Imports: autograd, optim, train's rooms below.

One iteration `it` is: set the learning rate for `it`, run `gradient_accumulation_steps`
micro-batches (each loss divided by their number, so the summed gradients are those of
the mean over all of them; each split over `processes` CPU processes when there are
several, see parallel.py), clip the gradient norm, take one AdamW step. Every
`eval_interval` iterations (and at the end) the mean loss over `eval_iters` batches of
each split is measured (evaluation.py), and a checkpoint is written (saving.py): resuming
from it (start.py) continues bit for bit.

Everything else is a room of its own that the loop calls:
    run_folder.py   out_dir: its lock, the refusal to replace a run, the log file
    start.py        a new or a resumed run's model, tokenizer, data, optimizer and streams
    saving.py       the checkpoint (with the other ranks' streams and the adapters alone)
    interrupts.py   Ctrl-C and SIGTERM, and what is saved after a fault
    precision.py    mixed precision: the float32 master copy and the loss scale
    metrics.py      log.jsonl, the console lines, the GPU's unread losses, --stats
    ranks.py        a rank's GPU, its start, the data-parallel object of a step
    zero.py         --zero 1: AdamW's moments sharded over the ranks (ZeRO stage 1)
"""

import contextlib
from dataclasses import asdict

from ..autograd import backend, reference_ops_enabled, use_reference_ops
from ..autograd.tensor import Tensor
from ..optim import clip_grad_norm_, get_schedule
from .config import TrainConfig, non_default_fields
from .distributed import init_process_group
from .evaluation import evaluate
from .interrupts import Interrupts
from .metrics import Metrics
from .ranks import make_parallel
from .run_folder import RunFolder
from .saving import Saving
from .start import start


class Trainer:
    """Holds a run's state; `run()` trains to `max_iters`. `log` receives each line.

    given: the names of the config's fields the caller set explicitly (the command line's
           flags); on resume, the others take the checkpoint's values. Default: the
           fields that differ from TrainConfig's defaults.

    group: the run's process group (distributed.py); default: from config.distributed
           and the environment (the ranks an MPI launcher started, else one process).
           Every rank trains; rank 0 alone logs, takes the lock and writes out_dir.

    The out_dir's lock is taken here and released when `run()` ends or at `close()`.
    With config.reference_ops every op and the optimizer run their reference code until
    then (tinygpt/autograd/ops, optim/adamw.py).
    """

    def __init__(self, config, log=None, given=None, group=None):
        self.config = config
        self.group = init_process_group(config.distributed) if group is None else group
        main = self.group.is_main
        self.log = (log or (lambda line: print(line, flush=True))) if main else _ignore
        self.given = set(given) if given is not None else non_default_fields(config)
        self.folder = RunFolder(config.out_dir, main)
        self.saving = Saving(self.folder.ckpt_path, self.folder.adapter_path,
                             self.folder.bottleneck_path)
        self.interrupts = Interrupts(self.group)
        self.parallel = None        # DataParallel or DDP (parallel_api.py), made at a step
        self._references = None     # use_reference_ops(True) with config.reference_ops
        try:
            start(self)         # config, model, tokenizer, data, precision, optimizer, ...
        except BaseException:
            self.close()
            raise
        if self.config.reference_ops:       # (on resume, maybe the checkpoint's setting)
            self._references = use_reference_ops(True)
        self.metrics = Metrics(self.config, self.model, self.log, self.ckpt_path)
        self.processes = self.config.resolved_processes()

    # Where tests and callers look for what the rooms hold.
    ckpt_path = property(lambda self: self.folder.ckpt_path)
    log_path = property(lambda self: self.folder.log_path)
    out_dir = property(lambda self: self.folder.path)
    master = property(lambda self: self.precision.master)
    scaler = property(lambda self: self.precision.scaler)
    scale_events = property(lambda self: self.precision.events)
    stats = property(lambda self: self.metrics.stats)

    def lr_at(self, it):
        cfg = self.config
        schedule = get_schedule(cfg.schedule, max_lr=cfg.learning_rate, min_lr=cfg.min_lr,
                                warmup_iters=cfg.warmup_iters, lr_decay_iters=cfg.lr_decay_iters)
        return schedule(it)

    def evaluate(self):
        cfg = self.config
        # Data-parallel workers wait meanwhile: this process gets all the cores back.
        with self.parallel.all_threads() if self.parallel else contextlib.nullcontext():
            return evaluate(self.model, {"train": self.train_data, "val": self.val_data},
                            cfg.block_size, cfg.batch_size, cfg.eval_iters, cfg.device,
                            seed=cfg.seed + 1, group=self.group)

    def save(self):
        """Write out_dir/ckpt.npz with everything needed to resume (see saving.py)."""
        self.saving.save(self)

    def step(self):
        """One iteration (all micro-batches and the update); returns the mean loss and the
        learning rate. The loss is a float, or on a GPU a 0-d Tensor there (`float(loss)`
        reads it; the run reads it only when it logs it). An error or an interruption
        before the update leaves the run as it was before the step (the batch and dropout
        generators rewound, no gradients)."""
        cfg, interrupts = self.config, self.interrupts
        lr = self.lr_at(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_micro = cfg.gradient_accumulation_steps
        if self.parallel is None and (self.processes > 1 or self.group.world_size > 1):
            self.parallel = make_parallel(self, n_micro)
        stats = self.stats if self.stats is not None and self.metrics.logs(self.iter_num) \
            else None
        if stats is not None:
            stats.start(self.iter_num)
        before = (self.sampler.state_dict(), backend.get_rng_state(),
                  backend.get_rng_state("cuda"))
        interrupts.interruptible = True
        try:
            batches = (self.sampler.get_batch() for _ in range(n_micro))
            if self.parallel is None:
                loss = self.local_forward_backward(batches, n_micro)
            else:           # split over processes or ranks (parallel_api.py)
                loss = self.parallel.forward_backward(list(batches))
            if isinstance(loss, Tensor):
                self.metrics.keep_unread(loss, self.iter_num)
            else:
                self.metrics.check_loss(loss, self.iter_num)
        except BaseException:
            self.optimizer.zero_grad(set_to_none=True)
            self.model.zero_grad()
            self.sampler.load_state_dict(before[0])
            backend.set_rng_state(before[1])
            backend.set_rng_state(before[2], "cuda")
            raise
        finally:
            interrupts.interruptible = False
        if stats is not None:
            stats.before_update()
        if not self.precision.unscale(self.model, self.optimizer, self.iter_num):
            return loss, lr                 # the gradients overflowed: no update this step
        weights = self.precision.weights(self.model)
        interrupts.consistent = False
        if cfg.grad_clip > 0 and not cfg.zero:      # ZeRO clips in its step (zero.py)
            clip_grad_norm_(weights.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.precision.copy_back(self.model)
        interrupts.consistent = True
        if stats is not None:
            stats.after_update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, lr

    def local_forward_backward(self, batches, n_micro):
        """Forward and backward of this process's `n_micro` (x, y) batches, each loss
        divided by n_micro (and multiplied by the loss scale under mixed precision); their
        mean loss, a float. On a GPU a 0-d Tensor there: each loss stays on the device,
        read back when it is logged (metrics.py)."""
        scaled = self.precision.scaler is not None
        on_gpu = backend.normalize_device(self.config.device) != "cpu"
        total = None if on_gpu else 0.0
        for x, y in batches:
            _, loss = self.model(x, y)
            if on_gpu:
                total = loss.detach() if total is None else total + loss.detach()
            else:
                value = loss.item()
                self.metrics.check_loss(value, self.iter_num)
                total += value
            if scaled:
                self.precision.scaled_backward(loss, n_micro)
            elif n_micro > 1:
                (loss / n_micro).backward()
            else:
                loss.backward()
        return total / n_micro if n_micro > 1 or not on_gpu else total

    def close(self):
        """Stop the data-parallel workers, if any, release out_dir and give back the ops
        the process ran before (`run` does all three at its end)."""
        if self.parallel is not None:
            self.parallel.close()
            self.parallel = None
        self.folder.release()
        if self._references is not None:
            self._references.__exit__()
            self._references = None

    def run(self):
        """Train from the current iteration to max_iters; returns the history of evals.

        Raises Interrupted after a Ctrl-C or SIGTERM, WorkerError when a data-parallel
        worker is lost (interrupts.py), TrainingError on a non-finite loss (metrics.py)."""
        cfg, metrics, interrupts = self.config, self.metrics, self.interrupts
        self.folder.acquire()               # again, after a previous run() released it
        if cfg.reference_ops and self._references is None:     # again, after close()
            self._references = use_reference_ops(True)
        metrics.announce(self)
        self.log(describe_ops())
        metrics.begin(self.folder.open_log(cfg.resume, self.iter_num), self.iter_num)
        try:
            with interrupts.faults(self):
                while True:
                    it = self.iter_num
                    if interrupts.stopping(self.parallel):
                        interrupts.stop_now(self)
                    if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                        metrics.check_unread(it)    # no checkpoint of weights a NaN reached
                        interrupts.interruptible = True
                        losses = self.evaluate()
                        interrupts.interruptible = False
                        self.history.append(metrics.evaluation(it, losses))
                        if cfg.save_checkpoints:
                            self.save()
                        metrics.mark(it)
                    if it >= cfg.max_iters:
                        break
                    if interrupts.stopping(self.parallel):
                        interrupts.stop_now(self)
                    loss, lr = self.step()
                    self.iter_num += 1
                    metrics.scale_events(self.precision.events)
                    if metrics.logs(it):
                        metrics.train(it, self.iter_num, loss, lr, self.model)
        finally:
            metrics.close()
            self.close()
        metrics.done(self.iter_num)
        return self.history


def describe_ops():
    """Which implementation runs, in words, for the run's first lines."""
    if reference_ops_enabled():
        return ("ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference, "
                "tinygpt/optim/adamw.py)")
    return ("ops: fast kernels (tinygpt/autograd/fast where one exists, optimizer: AdamW "
            "fast paths, tinygpt/optim/adamw_fast.py)")


def _ignore(line):
    """The log of ranks other than 0: they say nothing."""


def train(config=None, log=None, **overrides):
    """Train a GPT; `config` is a TrainConfig, or pass its fields as keyword arguments.

    >>> history = train(max_iters=200, out_dir="out-tiny")
    """
    if config is None:
        config, given = TrainConfig(**overrides), set(overrides)
    else:
        given = non_default_fields(config) | set(overrides)
        if overrides:
            config = TrainConfig(**{**asdict(config), **overrides})
    return Trainer(config, log=log, given=given).run()
