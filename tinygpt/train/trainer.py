"""The training loop: batches, forward, backward, clip, AdamW, evaluation, logs and
checkpoints (floor 6). Imports: autograd, optim, data, model, the standard library.

One iteration `it` is: set the learning rate for `it`, run `gradient_accumulation_steps`
micro-batches (each loss divided by their number, so the summed gradients are those of
the mean over all of them; each split over `processes` CPU processes when there are
several, see parallel.py), clip the gradient norm, take one AdamW step. Every
`eval_interval` iterations (and at the end) the mean loss over `eval_iters` batches of
each split is measured in eval mode without a graph, and a checkpoint is written
(`tinygpt.model.checkpoint`).

Exact resume: the checkpoint written at iteration `it` holds the state *before* step
`it` (parameters, optimizer moments, the batch sampler's and the dropout generator's
states). Evaluation draws its batches from a generator of its own, reseeded each time,
so evaluating never moves the training stream: 100 iterations straight and 50, resume,
50 give bit-identical parameters.

Faults. A run holds an exclusive lock on its out_dir from start to end (`FolderLock`): a
second run there fails at once, naming the process that holds it. An existing run is
never replaced or its log shortened unless resumed or overwritten. Ctrl-C (SIGINT) or
SIGTERM lets the current iteration finish, writes a checkpoint at the next one and raises
`Interrupted`; a second one stops at once, and the state before the unfinished step is
saved. A data-parallel worker that dies or stops answering ends the run the same way,
with that state saved and a WorkerError naming the worker.
"""

import contextlib
import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict

import numpy as np

from ..autograd import backend, no_grad
from ..autograd.fast import malloc
from ..autograd.tensor import Tensor
from ..data import BatchSampler, CharTokenizer, check_token_ids, load_text, train_val_split
from ..data.tokenizers import load_tokenizer, require_tokenizer
from ..files import FolderLock, atomic_write_text, remove_stale_temp_files
from ..model import GPT
from ..model.adapters import save_adapter
from ..model.checkpoint import CheckpointError, load_training_state, save_training_state
from ..nn.lora import apply_lora, lora_layers, merge_lora
from ..optim import (AdamW, GradScaler, clip_grad_norm_, configure_param_groups, copy_to,
                     get_schedule, master_copy)
from .config import INVOCATION, TrainConfig, non_default_fields, resumed_config
from .ddp import (DistributedDataParallel, agree, check_same_settings, check_same_state,
                  gather_rank_states, load_rank_state, rank_streams)
from .distributed import init_process_group
from .parallel import DataParallel, WorkerError
from .stats import StatsCollector

CHECKPOINT = "ckpt.npz"
ADAPTER = "adapter"         # out_dir/adapter: a LoRA run's adapters in PEFT's layout
LOG = "log.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal; the message says what was saved and how to go on.
    `signum` is the signal (SIGINT for Ctrl-C)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def evaluate(model, splits, block_size, batch_size, eval_iters, device="cpu", seed=0,
             group=None):
    """Mean loss over `eval_iters` random batches of each split, in eval mode, no graph.

    `splits` maps a name to an array of token ids. The batches come from a generator
    seeded with `seed`, so every evaluation sees the same windows and the training
    batch stream is left untouched. With a process group of N ranks (distributed.py),
    rank r computes batches r, r + N, ... of the same windows and the sums are
    all-reduced: every rank gets the one-process means (to float rounding).
    """
    rank, ranks = (group.rank, group.world_size) if group is not None else (0, 1)
    was_training = model.training
    model.eval()
    sums = np.zeros(len(splits))
    try:
        with no_grad():
            for i, data in enumerate(splits.values()):
                sampler = BatchSampler(data, block_size, batch_size, seed=seed, device=device)
                for k in range(eval_iters):
                    if k % ranks == rank:
                        sums[i] += model(*sampler.get_batch())[1].item()
                    else:
                        sampler.sample_starts()         # another rank's batch
    finally:
        model.train(was_training)
    if ranks > 1:
        group.all_reduce_(sums, what="the evaluation's all-reduce")
    return {name: float(total / eval_iters) for name, total in zip(splits, sums)}


def data_fingerprint(source, text):
    """What a checkpoint remembers of its training text: its source, its length in
    characters and in UTF-8 bytes (a file's size), and the sha256 of those bytes."""
    data = text.encode("utf-8", "surrogatepass")
    return {"source": str(source), "chars": len(text), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


class Trainer:
    """Holds a run's state; `run()` trains to `max_iters`. `log` receives each line.

    given: the names of the config's fields the caller set explicitly (the command line's
           flags); on resume, the others take the checkpoint's values. Default: the
           fields that differ from TrainConfig's defaults.

    group: the run's process group (distributed.py); default: from config.distributed
           and the environment (the ranks an MPI launcher started, else one process).
           Every rank trains; rank 0 alone logs, takes the lock and writes out_dir.

    The out_dir's lock is taken here and released when `run()` ends or at `close()`.
    """

    def __init__(self, config, log=None, given=None, group=None):
        malloc.keep_freed_memory()      # a training process reuses its freed memory
        self.config = config
        self.group = init_process_group(config.distributed) if group is None else group
        main = self.group.is_main
        self.log = (log or (lambda line: print(line, flush=True))) if main else _ignore
        self.given = set(given) if given is not None else non_default_fields(config)
        self.out_dir = config.out_dir
        self.ckpt_path = os.path.join(config.out_dir, CHECKPOINT)
        self.log_path = os.path.join(config.out_dir, LOG)
        self.lock = FolderLock(self.out_dir, hint=(
            "two runs writing one folder would overwrite each other's checkpoints and logs; "
            "wait for that run to end, or choose another --out_dir")) if main else _NoLock()
        self.parallel = None        # DataParallel or DDP (parallel_api.py), made at a step
        self._saved_ranks = []      # the other ranks' streams, from the checkpoint resumed
        self._stop = None           # the signal that asked the run to stop, if any
        self._interruptible = False  # a second signal may stop at once (not mid-update)
        self._consistent = True     # False while the optimizer updates the parameters
        self._saved_at = None       # the iteration of the last checkpoint written
        self.scale_events = []      # mixed precision: the loss scale's changes, to be logged
        self._unread = None         # on a GPU: the sum of the losses not read back yet
        self._unread_from = 0       # ... from this iteration on
        try:
            error = None
            try:
                self._setup()
            except Exception as e:  # noqa: BLE001 - raised on every rank by agree()
                error = e
            agree(self.group, error, "the set-up")
            self._start_rank()
        except BaseException:
            self.lock.release()
            raise
        # --stats: gradient, update and activation statistics on logged iterations
        self.stats = StatsCollector(self.model) if self.config.stats else None
        self.processes = self.config.resolved_processes()

    # --- set-up ---------------------------------------------------------------------------
    def _setup(self):
        cfg = self.config
        backend.array_module_for_device(backend.normalize_device(cfg.device))   # CuPy there?
        self._use_rank_gpu()
        self.lock.check()           # a run in progress there is named at once
        if cfg.resume:
            if not os.path.isfile(self.ckpt_path):
                raise FileNotFoundError(f"no checkpoint at {self.ckpt_path} to resume from")
            self.lock.acquire()
            if self.group.is_main:
                remove_stale_temp_files(self.out_dir)
            self._setup_from_checkpoint(load_training_state(self.ckpt_path))
            return
        self._refuse_existing_run()          # at once, before the data is read
        backend.manual_seed(cfg.seed)
        text = load_text(cfg.data, min_chars=cfg.block_size + 1)
        if cfg.init_from:
            # Fine-tuning: the model's shape and tokenizer come from the pretrained folder.
            self.model = GPT.from_pretrained(cfg.init_from, dropout=cfg.dropout)
            self.tokenizer = require_tokenizer(self.model)
            mc = self.model.config
            if cfg.block_size > mc.block_size:
                raise ValueError(
                    f"block_size {cfg.block_size} is larger than the pretrained model's "
                    f"{mc.block_size}")
            if cfg.block_size < mc.block_size:
                self.model.crop_block_size(cfg.block_size)
            cfg.n_layer, cfg.n_head, cfg.n_embd = mc.n_layer, mc.n_head, mc.n_embd
            cfg.bias, cfg.gelu_approximate = mc.bias, mc.gelu_approximate
            if cfg.lora_rank:
                apply_lora(self.model, **cfg.lora_options())
        else:
            self.tokenizer = (CharTokenizer.from_text(text) if cfg.tokenizer == "char"
                              else load_tokenizer(cfg.tokenizer))
            self.model = GPT(cfg.model_config(self.tokenizer.vocab_size))
        self._prepare_data(text)
        self.model.to(cfg.device)
        self._set_precision()
        # Everything above only read; from here on this run owns out_dir.
        self.lock.acquire()
        self._refuse_existing_run()
        if self.group.is_main:
            remove_stale_temp_files(self.out_dir)
        self._make_optimizer()
        self.sampler = BatchSampler(self.train_data, cfg.block_size, cfg.batch_size,
                                    seed=cfg.seed, device=cfg.device)
        self.iter_num = 0
        self.history = []

    def _refuse_existing_run(self):
        """A new run never replaces another's checkpoint or log unless told to."""
        if self.config.overwrite:
            return
        found = [name for name in (CHECKPOINT, LOG)
                 if os.path.exists(os.path.join(self.out_dir, name))]
        if found:
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({', '.join(found)}): pass --resume to "
                "continue it, or choose another --out_dir (or --overwrite to replace it)")

    def _prepare_data(self, text):
        self.data_info = data_fingerprint(self.config.data, text)
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        # Once, here on the host: the model does not check ids already on a GPU.
        check_token_ids(ids, self.model.config.vocab_size)
        self.train_data, self.val_data = train_val_split(ids, 0.9)
        need = self.config.block_size + 1
        for name, split in (("training", self.train_data), ("validation", self.val_data)):
            if len(split) < need:
                raise ValueError(
                    f"the {name} split has {len(split)} tokens, fewer than block_size + 1 = "
                    f"{need}: use a longer text or a smaller --block_size")

    def _set_precision(self):
        """The model in the run's dtype; for float16 (mixed precision) a float32 master
        copy that the optimizer updates and checkpoints save, and the loss scaler (see
        tinygpt/optim/amp.py)."""
        cfg = self.config
        self.master = self.scaler = None
        if cfg.dtype == "float16":
            self.master = master_copy(self.model.to("float32"))
            self.scaler = GradScaler(init_scale=cfg.loss_scale,
                                     growth_interval=max(1, cfg.loss_scale_window),
                                     dynamic=cfg.loss_scale_window > 0)
        self.model.to(cfg.dtype)

    def _make_optimizer(self):
        cfg = self.config
        weights = self.master if self.master is not None else self.model
        groups = configure_param_groups(weights.named_parameters(), cfg.weight_decay)
        self.optimizer = AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))

    def _setup_from_checkpoint(self, state):
        meta = state.meta
        self.config, changed = resumed_config(self.config, meta.get("train_config"), self.given)
        cfg = self.config
        backend.array_module_for_device(cfg.device)    # the saved run's device, if not told another
        self._use_rank_gpu()
        if state.tokenizer is None or state.optimizer_state is None:
            raise CheckpointError(f"{state.path} holds no tokenizer or optimizer state; it "
                                  "cannot be resumed")
        self.tokenizer = state.tokenizer
        # Mixed precision saves the float32 master weights: the model is made from them.
        self.model = state.build_model(dtype="float32" if cfg.dtype == "float16" else cfg.dtype,
                                       dropout=cfg.dropout)
        self.model.to(cfg.device)
        self._set_precision()
        text = load_text(cfg.data, min_chars=cfg.block_size + 1)
        self._prepare_data(text)
        self._check_data(meta.get("data"))
        self._make_optimizer()
        try:
            self.optimizer.load_state_dict(state.optimizer_state)
            self.sampler = BatchSampler(self.train_data, cfg.block_size, cfg.batch_size,
                                        seed=cfg.seed, device=cfg.device)
            self.sampler.load_state_dict(meta["sampler"])
            backend.set_rng_state(meta["rng"])
            if "cuda_rng" in meta:      # checkpoints from before it was saved lack it
                backend.set_rng_state(meta["cuda_rng"], "cuda")
            if self.scaler is not None:
                self.scaler.load_state_dict(meta["grad_scaler"])
            self.iter_num = int(meta["iter_num"])
            # The evaluation at iter_num is made again on resume (with the same result).
            self.history = [h for h in meta.get("history", []) if h["iter"] < self.iter_num]
            self._saved_ranks = list(meta.get("ranks", []))
            saved_world = int(meta.get("world_size", 1))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{state.path}: the training state is not usable "
                                  f"({type(e).__name__}: {e})") from None
        if self.iter_num < 0:
            raise CheckpointError(f"{state.path}: iter_num {self.iter_num} is negative")
        self._saved_at = self.iter_num
        if saved_world != self.group.world_size:
            changed["ranks"] = (saved_world, self.group.world_size)
        self.log(f"resuming from {self.ckpt_path} at iteration {self.iter_num}"
                 + ("; changed: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in
                                               changed.items()) if changed else ""))
        if saved_world < self.group.world_size:
            self.log(f"ranks {saved_world}-{self.group.world_size - 1} start batch and "
                     "dropout streams of their own (the checkpoint has none for them)")

    def _use_rank_gpu(self):
        """In a group on GPUs: this rank's GPU is its machine's number local_rank (before
        anything is put on one)."""
        if self.group.world_size > 1 and backend.normalize_device(self.config.device) != "cpu":
            from .nccl import use_local_gpu
            use_local_gpu(self.group)

    def _start_rank(self):
        """In a group of ranks: every rank checks that it has rank 0's settings and data,
        rank r > 0 takes its own batch and random streams (its spawns of the seed, or the
        checkpoint's, see ddp.py), and every rank checks that it holds rank 0's parameters
        and optimizer state."""
        group, cfg = self.group, self.config
        if group.world_size == 1:
            return
        settings = {k: v for k, v in asdict(cfg).items() if k not in INVOCATION}
        check_same_settings(group, {**settings, "data sha256": self.data_info["sha256"]})
        if group.rank > 0:
            batch_seed, random_seed = rank_streams(cfg.seed, group.rank)
            self.sampler = BatchSampler(self.train_data, cfg.block_size, cfg.batch_size,
                                        seed=batch_seed, device=cfg.device)
            backend.manual_seed(random_seed)
            if group.rank <= len(self._saved_ranks):
                load_rank_state(self._saved_ranks[group.rank - 1], self.sampler)
        check_same_state(group, self.model, self.optimizer, "at the start")

    def _check_data(self, saved):
        """Refuse (or with allow_data_change, note) training data that is not the text the
        checkpoint's run trained on."""
        now = self.data_info
        if not isinstance(saved, dict) or saved.get("sha256") == now["sha256"]:
            return      # the same text (or a checkpoint from before fingerprints)
        message = (f"the training data differs from the checkpoint's: {now['source']} now has "
                   f"{now['chars']:,} characters (sha256 {now['sha256'][:12]}...), the run "
                   f"trained on {saved.get('source')!r} with {saved.get('chars')!r} "
                   f"(sha256 {str(saved.get('sha256'))[:12]}...)")
        if not self.config.allow_data_change:
            raise ValueError(f"{message}; pass --allow_data_change true to train on it anyway "
                             "(the batches will not be the saved run's)")
        self.log(f"warning: {message}; training on it (--allow_data_change)")

    # --- checkpoints ----------------------------------------------------------------------
    def save(self):
        """Write out_dir/ckpt.npz (atomically) with everything needed to resume. In a
        group every rank calls it: the ranks' streams are gathered, their states checked
        equal, and rank 0 alone writes."""
        ranks = self._saved_ranks
        if self.group.world_size > 1:
            ranks = gather_rank_states(self.group, self.sampler, self._saved_ranks)
            check_same_state(self.group, self.model, self.optimizer,
                             f"at iteration {self.iter_num}")
        if not self.group.is_main:
            self._saved_at = self.iter_num
            return
        extra = {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}
        save_training_state(
            self.ckpt_path, self.master if self.master is not None else self.model,
            self.optimizer, self.tokenizer,
            train_config=asdict(self.config), sampler=self.sampler.state_dict(),
            rng=backend.get_rng_state(), cuda_rng=backend.get_rng_state("cuda"),
            iter_num=self.iter_num, history=self.history, data=self.data_info,
            world_size=self.group.world_size, ranks=ranks, **extra)
        if self.config.lora_rank:       # the adapters alone too, for PEFT and load_adapter
            save_adapter(self.model, os.path.join(self.out_dir, ADAPTER), overwrite=True,
                         base_model_name_or_path=self.config.init_from)
        self._saved_at = self.iter_num

    # --- the loop -------------------------------------------------------------------------
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

    def _logs(self, it):
        """Whether iteration `it` writes a log line (and its statistics)."""
        return it % self.config.log_interval == 0 or it + 1 == self.config.max_iters

    def step(self):
        """One iteration (all micro-batches and the update); returns the mean loss and the
        learning rate. The loss is a float, or on a GPU a 0-d Tensor there (`float(loss)`
        reads it; the run reads it only when it logs it). An error or an interruption
        before the update leaves the run as it was before the step (the batch and dropout
        generators rewound, no gradients)."""
        cfg = self.config
        lr = self.lr_at(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_micro = cfg.gradient_accumulation_steps
        if self.parallel is None and self.group.world_size > 1:
            self.parallel = DistributedDataParallel(
                self.model, self.group, lambda batches: self._local_forward_backward(
                    batches, n_micro), stop_requested=lambda: self._stop is not None)
        if self.processes > 1 and self.parallel is None:
            # Forked before the statistics hooks are switched on: only this process's run.
            self.parallel = DataParallel(self.model, self.processes)
        stats = self.stats if self.stats is not None and self._logs(self.iter_num) else None
        if stats is not None:
            stats.start(self.iter_num)
        before = (self.sampler.state_dict(), backend.get_rng_state(),
                  backend.get_rng_state("cuda"))
        self._interruptible = True
        try:
            loss = self._forward_backward(n_micro)
        except BaseException:
            self.optimizer.zero_grad(set_to_none=True)
            self.model.zero_grad()
            self.sampler.load_state_dict(before[0])
            backend.set_rng_state(before[1])
            backend.set_rng_state(before[2], "cuda")
            raise
        finally:
            self._interruptible = False
        if stats is not None:
            stats.before_update()
        weights = self.model
        if self.master is not None and not self._unscale():
            return loss, lr                 # the gradients overflowed: no update this step
        if self.master is not None:
            weights = self.master
        self._consistent = False
        if cfg.grad_clip > 0:
            clip_grad_norm_(weights.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.master is not None:
            copy_to(self.master, self.model)
        self._consistent = True
        if stats is not None:
            stats.after_update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, lr

    def _unscale(self):
        """Mixed precision: the float16 gradients, divided by the loss scale, into the master
        weights' float32 ones; the scale updated (and its change logged). False when they
        overflowed: the step is skipped."""
        finite = self.scaler.unscale(self.model, self.master)
        self.model.zero_grad()
        before = self.scaler.scale
        change = self.scaler.update(finite)
        if change is not None:
            self.scale_events.append({"event": "loss_scale", "iter": self.iter_num,
                                      "change": change, "scale": self.scaler.scale,
                                      "previous": before})
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
        return finite

    def _forward_backward(self, n_micro):
        """The step's micro-batches, through `self.parallel` (parallel_api.py) when there
        is one; the mean loss (see `step`)."""
        batches = (self.sampler.get_batch() for _ in range(n_micro))
        if self.parallel is None:
            loss = self._local_forward_backward(batches, n_micro)
        else:
            loss = self.parallel.forward_backward(list(batches))
        if isinstance(loss, Tensor):
            self._keep_unread(loss)
        else:
            self._check_loss(loss)
        return loss

    def _local_forward_backward(self, batches, n_micro):
        """Forward and backward of this process's `n_micro` (x, y) batches; their mean
        loss, a float (on a GPU, a 0-d Tensor there)."""
        if backend.normalize_device(self.config.device) != "cpu":
            return self._step_on_device(batches, n_micro)
        total = 0.0
        for x, y in batches:
            _, loss = self.model(x, y)
            value = loss.item()
            self._check_loss(value)
            total += value
            self._backward(loss, n_micro)
        return total / n_micro

    def _backward(self, loss, n_micro):
        """backward() of loss / n_micro, the loss first multiplied by the loss scale under
        mixed precision (so that small float16 gradients do not underflow)."""
        if self.scaler is None:
            (loss / n_micro).backward() if n_micro > 1 else loss.backward()
            return
        # Gradients that overflow float16 are expected (the scaler sees them and skips the
        # step): no warning for them.
        with np.errstate(over="ignore", invalid="ignore"):
            (loss * (self.scaler.scale / n_micro)).backward()

    def _step_on_device(self, batches, n_micro):
        """The micro-batches of a step on a GPU; the mean loss as a 0-d Tensor there. Each
        loss stays on the device, where `_unread` adds it up (`_keep_unread`): reading it
        back each step would make the host wait for the GPU. It is read, and checked, when
        it is logged and before each evaluation (`_read_loss`, `_check_unread`)."""
        total = None
        for x, y in batches:
            _, loss = self.model(x, y)
            total = loss.detach() if total is None else total + loss.detach()
            self._backward(loss, n_micro)
        return total / n_micro if n_micro > 1 else total

    def _keep_unread(self, loss):
        """Add a step's loss on the GPU to the ones not read back yet."""
        if self._unread is None:
            self._unread, self._unread_from = loss, self.iter_num
        else:
            self._unread = self._unread + loss      # a NaN or an inf anywhere stays one
        return loss

    def _read_loss(self, loss):
        """A step's loss as a float, and every unread loss checked, in one transfer."""
        if not isinstance(loss, Tensor):
            return loss
        values = backend.to_numpy(backend.array_module(loss.data).stack(
            [loss.data, self._unread.data]))
        self._check_unread(float(values[1]))
        return float(values[0])

    def _check_unread(self, total=None):
        """Raise TrainingError when a loss since the last check was not finite (`total`:
        their sum, read back here when not given)."""
        if self._unread is None:
            return
        if total is None:
            total = self._unread.item()
        first, self._unread = self._unread_from, None
        if not math.isfinite(total):
            raise TrainingError(
                f"the loss became {total} in iterations {first}-{self.iter_num - 1} (on a "
                f"GPU the loss is read when logged); training stopped and the last good "
                f"checkpoint ({self.ckpt_path}) was kept. Try a lower --learning_rate or "
                "--grad_clip")

    def _expert_stats(self):
        """The last step's routing in the mixture-of-experts layers (this process's part of
        the batch), for the log: {"aux_loss", "dropped"}, or {} without experts."""
        stats = self.model.moe_stats()
        if stats is None:
            return {}
        return {"aux_loss": float(stats["aux_loss"].item()), "dropped": int(stats["dropped"])}

    def _check_loss(self, value):
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at iteration {self.iter_num}; training stopped and "
                f"the last good checkpoint ({self.ckpt_path}) was kept. Try a lower "
                "--learning_rate or --grad_clip")

    def close(self):
        """Stop the data-parallel workers, if any, and release out_dir (`run` does both at
        its end)."""
        if self.parallel is not None:
            self.parallel.close()
            self.parallel = None
        self.lock.release()

    def run(self):
        """Train from the current iteration to max_iters; returns the history of evals.

        Raises Interrupted after a Ctrl-C or SIGTERM, WorkerError when a data-parallel
        worker is lost, TrainingError on a non-finite loss (see the module docstring)."""
        cfg = self.config
        ranks = self.group.world_size
        tokens_per_iter = (cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
                           * ranks)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.lock.acquire()                 # again, after a previous run() released it
        trainable = self.model.num_parameters(only_trainable=True)
        self.log(f"model: {n_params / 1e6:.2f}M parameters"
                 + (f" ({trainable / 1e6:.2f}M trainable: LoRA rank {cfg.lora_rank})"
                    if cfg.lora_rank else "") + f", {cfg.n_layer} layers, "
                 f"{cfg.n_head} heads, {cfg.n_embd} channels, vocabulary "
                 f"{self.model.config.vocab_size}; {len(self.train_data):,} training tokens; "
                 f"{tokens_per_iter:,} tokens per iteration"
                 + (f", each batch split over {self.processes} processes (--processes)"
                    if self.processes > 1 else "")
                 + (f", {cfg.batch_size} rows a step on each of {self.group.describe()}"
                    if ranks > 1 else ""))
        log_file = self._open_log()
        start_time = time.perf_counter()
        start_iter = self.iter_num
        # ms/iter is measured over the iterations since the last mark, evaluation excluded.
        mark_time, mark_iter = time.perf_counter(), self.iter_num
        try:
            with self._signals():
                while True:
                    it = self.iter_num
                    if self._stopping():
                        self._stop_now()
                    if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                        self._check_unread()    # no checkpoint of weights a NaN has reached
                        self._interruptible = True
                        losses = self.evaluate()
                        self._interruptible = False
                        entry = {"iter": it, "train_loss": losses["train"],
                                 "val_loss": losses["val"]}
                        self.history.append(entry)
                        log_file.write(json.dumps({"event": "eval", **entry}) + "\n")
                        log_file.flush()
                        self.log(f"step {it}: train loss {losses['train']:.4f}, "
                                 f"val loss {losses['val']:.4f}")
                        if cfg.save_checkpoints:
                            self.save()
                        mark_time, mark_iter = time.perf_counter(), it
                    if it >= cfg.max_iters:
                        break
                    if self._stopping():
                        self._stop_now()
                    loss, lr = self.step()
                    self.iter_num += 1
                    for event in self.scale_events:     # mixed precision's loss scale
                        log_file.write(json.dumps(event) + "\n")
                        self.log(f"iter {event['iter']}: loss scale {event['previous']:g} -> "
                                 f"{event['scale']:g} ("
                                 + ("the gradients overflowed: step skipped)"
                                    if event["change"] == "backoff"
                                    else f"{self.config.loss_scale_window} steps without "
                                         "overflow)"))
                    self.scale_events.clear()
                    if self._logs(it):
                        loss = self._read_loss(loss)
                        now = time.perf_counter()
                        dt = (now - mark_time) / max(1, self.iter_num - mark_iter)
                        mark_time, mark_iter = now, self.iter_num
                        done = self.iter_num - start_iter
                        eta = (now - start_time) / done * (cfg.max_iters - self.iter_num)
                        record = {"event": "train", "iter": it, "loss": loss, "lr": lr,
                                  "ms_per_iter": dt * 1e3, "tokens_per_s": tokens_per_iter / dt}
                        experts = self._expert_stats()
                        record.update(experts)
                        log_file.write(json.dumps(record) + "\n")
                        stats = self.stats.pop() if self.stats is not None else None
                        if stats is not None:
                            log_file.write(json.dumps(stats) + "\n")
                        log_file.flush()
                        self.log(f"iter {it}/{cfg.max_iters} "
                                 f"({100 * self.iter_num / cfg.max_iters:.0f}%): "
                                 f"loss {loss:.4f}, lr {lr:.2e}, {dt * 1e3:.1f} ms/iter, "
                                 f"{tokens_per_iter / dt:,.0f} tok/s, eta {_format_time(eta)}"
                                 + (f"; experts: aux loss {experts['aux_loss']:.4f}, "
                                    f"{experts['dropped']} dropped" if experts else ""))
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted(self._save_after_fault("stopped at once"),
                              self._stop or signal.SIGINT) from None
        except WorkerError as e:
            raise WorkerError(f"{e}; {self._save_after_fault('training stopped')}") from None
        finally:
            log_file.close()
            self.close()
        elapsed = time.perf_counter() - start_time
        self.log(f"done: {self.iter_num - start_iter} iterations in {_format_time(elapsed)}")
        return self.history

    # --- stopping ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self):
        """Ctrl-C and SIGTERM ask the loop to stop (see `_on_signal`) while it runs; outside
        the main thread, where Python cannot catch signals, they keep their handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum, frame):
        if self._stop is None:
            self._stop = signum
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            # os.write: a signal handler may run in the middle of another print.
            if self.group.is_main:
                os.write(2, f"\n{name}: stopping after this iteration and saving a checkpoint "
                            f"({name} again stops at once)\n".encode())
        elif self._interruptible and self.group.world_size == 1:
            # (Ranks stop together, after the same iteration: a rank that left mid-step
            # would leave the others waiting. A second Ctrl-C to mpiexec ends them all.)
            raise KeyboardInterrupt

    def _stopping(self):
        """Whether to stop at this iteration: a signal asked this process to, or, in a
        group, the last step's status exchange found that one asked a rank to (so every
        rank stops at the same iteration)."""
        if self.group.world_size == 1:
            return self._stop is not None
        return bool(self.parallel is not None and self.parallel.stopping)

    def _resume_hint(self):
        return f"continue with: python -m tinygpt train --out_dir {self.out_dir} --resume"

    def _stop_now(self):
        """Save at the current iteration (the state before its step) and raise Interrupted."""
        if self.config.save_checkpoints:
            if self._saved_at != self.iter_num:
                self.save()
            what = f"saved {self.ckpt_path} at iteration {self.iter_num}; {self._resume_hint()}"
        else:
            what = f"nothing saved (save_checkpoints is false) at iteration {self.iter_num}"
        interrupted = Interrupted(f"interrupted: {what}", self._stop or signal.SIGINT)
        interrupted.collective = self.group.world_size > 1     # every rank raises it here
        raise interrupted

    def _save_after_fault(self, what):
        """After an interruption or a lost worker: save the state before the unfinished
        step, unless the parameters were caught mid-update; returns what happened, in words."""
        if not self.config.save_checkpoints:
            return f"{what} at iteration {self.iter_num}; nothing saved (save_checkpoints is false)"
        if self.group.world_size > 1:     # this rank left the others: none can join a save
            return (f"{what} at iteration {self.iter_num} on rank {self.group.rank} alone; "
                    f"the last checkpoint (iteration {self._saved_at}) was kept")
        if not self._consistent:
            return (f"{what} during the parameter update of iteration {self.iter_num}; the "
                    f"last checkpoint (iteration {self._saved_at}) was kept")
        if self._saved_at != self.iter_num:
            self.save()
        return (f"{what}; saved {self.ckpt_path} at iteration {self.iter_num}; "
                f"{self._resume_hint()}")

    def _open_log(self):
        """The JSON-lines loss log, for appending. On resume, lines past the resumed iteration
        are dropped (the file is rewritten atomically); a new run starts it afresh (an
        existing run's log is only replaced with --overwrite, see `_refuse_existing_run`)."""
        if not self.group.is_main:
            return open(os.devnull, "w", encoding="utf-8")
        if not self.config.resume:
            return open(self.log_path, "w", encoding="utf-8")
        if os.path.exists(self.log_path):
            kept, dropped = [], 0
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        keep = record.get("iter", 0) < self.iter_num
                    except (json.JSONDecodeError, RecursionError, AttributeError, TypeError):
                        keep = False        # a line cut short by a kill, or not a record
                    if keep:
                        kept.append(line if line.endswith("\n") else line + "\n")
                    else:
                        dropped += 1
            if dropped:
                atomic_write_text(self.log_path, "".join(kept))
        return open(self.log_path, "a", encoding="utf-8")


def _ignore(line):
    """The log of ranks other than 0: they say nothing."""


class _NoLock:
    """The lock of ranks other than 0, which never write out_dir."""

    def check(self):
        pass

    def acquire(self):
        pass

    def release(self):
        pass


def _format_time(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


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


def load_for_inference(out_dir, device="cpu"):
    """(model, tokenizer) from out_dir/ckpt.npz (or a .npz path), in eval mode."""
    path = out_dir if str(out_dir).endswith(".npz") else os.path.join(out_dir, CHECKPOINT)
    state = load_training_state(path)
    if state.tokenizer is None:
        raise CheckpointError(f"{path} holds no tokenizer")
    dtype = (state.meta.get("train_config") or {}).get("dtype")
    model = state.build_model(dtype=dtype if dtype in ("float32", "float64") else None)
    if lora_layers(model):
        merge_lora(model)       # plain weights: generation runs as fast as without LoRA
    model.to(backend.normalize_device(device))
    model.eval()
    return model, state.tokenizer
