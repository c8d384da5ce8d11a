"""The training loop: batches, forward, backward, clip, AdamW, evaluation, logs and
checkpoints (floor 6). Imports: autograd, nn, optim, data, model.

One iteration `it` is: set the learning rate for `it`, run `gradient_accumulation_steps`
micro-batches (each loss divided by their number, so the summed gradients are those of
the mean over all of them; each split over `processes` CPU processes when there are
several, see parallel.py), clip the gradient norm, take one AdamW step. Every
`eval_interval` iterations (and at the end) the mean loss over `eval_iters` batches of
each split is measured in eval mode without a graph, and a checkpoint is written.

Exact resume: the checkpoint written at iteration `it` holds the state *before* step
`it` (parameters, optimizer moments, the batch sampler's and the dropout generator's
states). Evaluation draws its batches from a generator of its own, reseeded each time,
so evaluating never moves the training stream: 100 iterations straight and 50, resume,
50 give bit-identical parameters.
"""

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..autograd import backend, no_grad
from ..autograd.tensor import Tensor
from ..data import BatchSampler, BPETokenizer, CharTokenizer, load_text, train_val_split
from ..model import GPT, GPTConfig
from ..model.adapters import save_adapter
from ..model.checkpoint import load_checkpoint, model_arrays, model_state, save_checkpoint
from ..model.pretrained import require_tokenizer, tokenizer_from_dict
from ..nn.lora import apply_lora, check_lora_options, merge_lora
from ..optim import AdamW, clip_grad_norm_, configure_param_groups, get_schedule
from .parallel import DataParallel, auto_processes, check_processes
from .stats import StatsCollector

CHECKPOINT = "ckpt.npz"
LOG = "log.jsonl"
ADAPTER = "adapter"         # out_dir/adapter: a LoRA run's adapters in PEFT's layout
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


def lora_options(train_config):
    """apply_lora's keyword arguments from a TrainConfig's fields (a dict)."""
    return dict(rank=train_config["lora_rank"], alpha=train_config["lora_alpha"],
                dropout=train_config["lora_dropout"],
                targets=tuple(t.strip() for t in train_config["lora_targets"].split(",")
                              if t.strip()))


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are nanoGPT's small CPU recipe for
    tiny Shakespeare (4 layers, 4 heads, 128 channels, 64 tokens of context)."""

    # input and output
    out_dir: str = "out"
    data: str = "default"           # "default" (embedded), "shakespeare", or a text file
    tokenizer: str = "char"         # "char", "gpt2", or the path of a saved BPE tokenizer
    resume: bool = False            # continue from out_dir/ckpt.npz
    init_from: str = ""             # a pretrained GPT-2 folder (config.json + model.safetensors)
    overwrite: bool = False         # allow replacing an existing checkpoint in out_dir
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    save_checkpoints: bool = True
    stats: bool = False             # log gradient and activation statistics
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False              # nanoGPT trains without biases by default
    gelu_approximate: str = "none"  # nanoGPT's nn.GELU(); GPT-2's own is "tanh"
    # optimisation
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    schedule: str = "cosine"        # "cosine" (warm-up then cosine), "linear", "constant"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0          # 0 disables clipping
    # system
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 1337
    processes: int = 0              # CPU processes sharing each batch; 0: auto (2 on Linux
                                    # with 2+ cores, else 1); see tinygpt/train/parallel.py
    # LoRA (with init_from; see tinygpt/nn/lora.py): rank 0 trains every parameter
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "c_attn,c_proj,c_fc"    # comma-separated layer names

    def __post_init__(self):
        positive = ("eval_interval", "eval_iters", "log_interval", "n_layer", "n_head", "n_embd",
                    "block_size", "batch_size", "gradient_accumulation_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            raise ValueError(
                f"learning_rate must be > 0 and min_lr >= 0, got {self.learning_rate} and {self.min_lr}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        backend.normalize_device(self.device)
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) \
                or self.processes < 0:
            raise ValueError(f"processes must be 0 (auto) or a positive integer, got "
                             f"{self.processes!r}")
        if self.processes != 0:
            check_processes(self.processes, self.device)
            if self.processes > self.batch_size:
                raise ValueError(f"processes ({self.processes}) must not exceed batch_size "
                                 f"({self.batch_size}): each process takes at least one row")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) \
                or self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (no LoRA) or a positive integer, got "
                             f"{self.lora_rank!r}")
        if self.lora_rank:
            if not (self.init_from or self.resume):
                raise ValueError("lora_rank adapts a pre-trained model: give --init_from too")
            check_lora_options(**self.lora_options())

    def lora_options(self):
        """apply_lora's keyword arguments for this run's LoRA settings."""
        return lora_options(asdict(self))

    def resolved_processes(self):
        """The processes a step runs on: `processes`, or for 0 (auto) `auto_processes`:
        two on Linux with at least two usable cores (CPU, batch of 2+ rows), else one."""
        if self.processes:
            return self.processes
        return auto_processes(backend.usable_cores(), self.batch_size, self.device)

    def model_config(self, vocab_size):
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout,
                         bias=self.bias, gelu_approximate=self.gelu_approximate)


def evaluate(model, splits, block_size, batch_size, eval_iters, device="cpu", seed=0):
    """Mean loss over `eval_iters` random batches of each split, in eval mode, no graph.

    `splits` maps a name to an array of token ids. The batches come from a generator
    seeded with `seed`, so every evaluation sees the same windows and the training
    batch stream is left untouched.
    """
    was_training = model.training
    model.eval()
    out = {}
    try:
        with no_grad():
            for name, data in splits.items():
                sampler = BatchSampler(data, block_size, batch_size, seed=seed, device=device)
                losses = [model(*sampler.get_batch())[1].item()
                          for _ in range(eval_iters)]
                out[name] = float(np.mean(losses))
    finally:
        model.train(was_training)
    return out


class Trainer:
    """Holds a run's state; `run()` trains to `max_iters`. `log` receives each line."""

    def __init__(self, config, log=None):
        self.config = config
        self.log = log or (lambda line: print(line, flush=True))
        self.out_dir = config.out_dir
        self.ckpt_path = os.path.join(config.out_dir, CHECKPOINT)
        self._setup()
        # --stats: gradient, update and activation statistics on logged iterations
        self.stats = StatsCollector(self.model) if config.stats else None
        self.processes = config.resolved_processes()
        self.parallel = None        # the DataParallel workers, started by the first step

    # --- set-up ---------------------------------------------------------------------------
    def _setup(self):
        cfg = self.config
        if cfg.resume:
            arrays, meta = load_checkpoint(self.ckpt_path)
            self._setup_from_checkpoint(arrays, meta)
            return
        if os.path.exists(self.ckpt_path) and not cfg.overwrite and cfg.save_checkpoints:
            raise FileExistsError(
                f"{self.ckpt_path} already exists: pass --resume to continue that run, or "
                "choose another --out_dir (or --overwrite to replace it)")
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
            self.tokenizer = self._make_tokenizer(text)
            self.model = GPT(cfg.model_config(self.tokenizer.vocab_size))
        self._prepare_data(text)
        self.model.to(cfg.dtype)
        self.model.to(cfg.device)
        self._make_optimizer()
        self.sampler = BatchSampler(self.train_data, cfg.block_size, cfg.batch_size,
                                    seed=cfg.seed, device=cfg.device)
        self.iter_num = 0
        self.history = []

    def _make_tokenizer(self, text):
        cfg = self.config
        if cfg.tokenizer == "char":
            return CharTokenizer.from_text(text)
        if cfg.tokenizer == "gpt2":
            return BPETokenizer.gpt2()
        return BPETokenizer.load(cfg.tokenizer)

    def _prepare_data(self, text):
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        self.train_data, self.val_data = train_val_split(ids, 0.9)
        need = self.config.block_size + 1
        for name, split in (("training", self.train_data), ("validation", self.val_data)):
            if len(split) < need:
                raise ValueError(
                    f"the {name} split has {len(split)} tokens, fewer than block_size + 1 = "
                    f"{need}: use a longer text or a smaller --block_size")

    def _make_optimizer(self):
        cfg = self.config
        groups = configure_param_groups(self.model.named_parameters(), cfg.weight_decay)
        self.optimizer = AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))

    def _setup_from_checkpoint(self, arrays, meta):
        cfg = self.config
        saved = meta["train_config"]
        # The model, data and tokenizer come from the checkpoint; the schedule and the
        # length of the run may be changed on resume.
        for name in ("n_layer", "n_head", "n_embd", "block_size", "bias", "gelu_approximate",
                     "data", "tokenizer", "batch_size", "gradient_accumulation_steps", "seed",
                     "dtype", "dropout"):
            setattr(cfg, name, saved[name])
        for name in LORA_FIELDS:
            setattr(cfg, name, saved.get(name, getattr(TrainConfig, name)))
        self.tokenizer = tokenizer_from_dict(meta["tokenizer"])
        self.model = GPT(GPTConfig.from_dict(meta["model_config"]))
        if cfg.lora_rank:
            apply_lora(self.model, **cfg.lora_options())
        self.model.to(cfg.dtype)
        self.model.load_state_dict(model_state(arrays, meta.get("model_aliases", {})))
        self.model.to(cfg.device)
        text = load_text(cfg.data, min_chars=cfg.block_size + 1)
        self._prepare_data(text)
        self._make_optimizer()
        self.optimizer.load_state_dict(_join_arrays(meta["optimizer"], arrays, "optim/"))
        self.sampler = BatchSampler(self.train_data, cfg.block_size, cfg.batch_size,
                                    seed=cfg.seed, device=cfg.device)
        self.sampler.load_state_dict(meta["sampler"])
        backend.set_rng_state(meta["rng"])
        self.iter_num = int(meta["iter_num"])
        self.history = meta.get("history", [])
        self.log(f"resuming from {self.ckpt_path} at iteration {self.iter_num}")

    # --- checkpoints ----------------------------------------------------------------------
    def save(self):
        """Write out_dir/ckpt.npz (atomically) with everything needed to resume."""
        arrays, aliases = model_arrays(self.model)      # the tied head stored once
        optim_meta = _split_arrays(self.optimizer.state_dict(), arrays, "optim/")
        meta = {
            "train_config": asdict(self.config),
            "model_config": self.model.config.to_dict(),
            "model_aliases": aliases,
            "tokenizer": self.tokenizer.to_dict(),
            "optimizer": optim_meta,
            "sampler": self.sampler.state_dict(),
            "rng": backend.get_rng_state(),
            "iter_num": self.iter_num,
            "history": self.history,
        }
        save_checkpoint(self.ckpt_path, arrays, meta)
        if self.config.lora_rank:     # the adapters alone too, for PEFT and load_adapter
            save_adapter(self.model, os.path.join(self.out_dir, ADAPTER), overwrite=True,
                         base_model_name_or_path=self.config.init_from)

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
                            seed=cfg.seed + 1)

    def _logs(self, it):
        """Whether iteration `it` writes a log line (and its statistics)."""
        return it % self.config.log_interval == 0 or it + 1 == self.config.max_iters

    def step(self):
        """One iteration (all micro-batches and the update); returns the mean loss."""
        cfg = self.config
        lr = self.lr_at(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_micro = cfg.gradient_accumulation_steps
        if self.processes > 1 and self.parallel is None:
            # Forked before the statistics hooks are switched on: only this process's run.
            self.parallel = DataParallel(self.model, self.processes)
        stats = self.stats if self.stats is not None and self._logs(self.iter_num) else None
        if stats is not None:
            stats.start(self.iter_num)
        if self.parallel is not None:
            loss = self.parallel.forward_backward(
                [self.sampler.get_batch() for _ in range(n_micro)])
            self._check_loss(loss)
        else:
            total = 0.0
            for _ in range(n_micro):
                x, y = self.sampler.get_batch()
                _, loss = self.model(x, y)
                value = loss.item()
                self._check_loss(value)
                total += value
                (loss / n_micro).backward() if n_micro > 1 else loss.backward()
            loss = total / n_micro
        if stats is not None:
            stats.before_update()
        if cfg.grad_clip > 0:
            clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if stats is not None:
            stats.after_update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, lr

    def _check_loss(self, value):
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at iteration {self.iter_num}; training stopped and "
                f"the last good checkpoint ({self.ckpt_path}) was kept. Try a lower "
                "--learning_rate or --grad_clip")

    def close(self):
        """Stop the data-parallel workers, if any (`run` does at its end)."""
        if self.parallel is not None:
            self.parallel.close()
            self.parallel = None

    def run(self):
        """Train from the current iteration to max_iters; returns the history of evals."""
        cfg = self.config
        tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
        n_params = sum(p.numel() for p in self.model.parameters())
        trainable = self.model.num_parameters(only_trainable=True)
        self.log(f"model: {n_params / 1e6:.2f}M parameters"
                 + (f" ({trainable / 1e6:.2f}M trainable: LoRA rank {cfg.lora_rank})"
                    if cfg.lora_rank else "") + f", {cfg.n_layer} layers, "
                 f"{cfg.n_head} heads, {cfg.n_embd} channels, vocabulary "
                 f"{self.model.config.vocab_size}; {len(self.train_data):,} training tokens; "
                 f"{tokens_per_iter:,} tokens per iteration"
                 + (f", each batch split over {self.processes} processes (--processes)"
                    if self.processes > 1 else ""))
        log_file = self._open_log()
        start_time = time.perf_counter()
        start_iter = self.iter_num
        # ms/iter is measured over the iterations since the last mark, evaluation excluded.
        mark_time, mark_iter = time.perf_counter(), self.iter_num
        try:
            while True:
                it = self.iter_num
                if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                    losses = self.evaluate()
                    entry = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"]}
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
                loss, lr = self.step()
                self.iter_num += 1
                if self._logs(it):
                    now = time.perf_counter()
                    dt = (now - mark_time) / max(1, self.iter_num - mark_iter)
                    mark_time, mark_iter = now, self.iter_num
                    done = self.iter_num - start_iter
                    eta = (now - start_time) / done * (cfg.max_iters - self.iter_num)
                    record = {"event": "train", "iter": it, "loss": loss, "lr": lr,
                              "ms_per_iter": dt * 1e3, "tokens_per_s": tokens_per_iter / dt}
                    log_file.write(json.dumps(record) + "\n")
                    stats = self.stats.pop() if self.stats is not None else None
                    if stats is not None:
                        log_file.write(json.dumps(stats) + "\n")
                    log_file.flush()
                    self.log(f"iter {it}/{cfg.max_iters} ({100 * self.iter_num / cfg.max_iters:.0f}%): "
                             f"loss {loss:.4f}, lr {lr:.2e}, {dt * 1e3:.1f} ms/iter, "
                             f"{tokens_per_iter / dt:,.0f} tok/s, eta {_format_time(eta)}")
        finally:
            log_file.close()
            self.close()
        elapsed = time.perf_counter() - start_time
        self.log(f"done: {self.iter_num - start_iter} iterations in {_format_time(elapsed)}")
        return self.history

    def _open_log(self):
        """The JSON-lines loss log; on resume, lines past the resumed iteration are dropped."""
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, LOG)
        kept = []
        if self.config.resume and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if record.get("iter", 0) < self.iter_num:
                        kept.append(line if line.endswith("\n") else line + "\n")
        f = open(path, "w", encoding="utf-8")
        f.writelines(kept)
        return f


def _format_time(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _split_arrays(obj, arrays, prefix):
    """Replace every NumPy/backend array inside nested dicts/lists by a reference, storing
    the array in `arrays`; returns the JSON-serialisable rest."""
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split_arrays(v, arrays, f"{prefix}{k}/") for k, v in obj.items()}
        # JSON keys are strings: keep other keys (parameter indices) as pairs.
        return {"__items__": [[k, _split_arrays(v, arrays, f"{prefix}{k}/")]
                              for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, arrays, f"{prefix}{i}/") for i, v in enumerate(obj)]
    if isinstance(obj, Tensor):
        obj = obj.data
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, np.generic):
        name = prefix.rstrip("/")
        arrays[name] = backend.to_numpy(obj)
        return {"__array__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj, arrays, prefix):
    """The inverse of `_split_arrays`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        if set(obj) == {"__items__"}:
            return {k: _join_arrays(v, arrays, prefix) for k, v in obj["__items__"]}
        return {k: _join_arrays(v, arrays, prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays, prefix) for v in obj]
    return obj


def train(config=None, log=None, **overrides):
    """Train a GPT; `config` is a TrainConfig, or pass its fields as keyword arguments.

    >>> history = train(max_iters=200, out_dir="out-tiny")
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = TrainConfig(**{**asdict(config), **overrides})
    trainer = Trainer(config, log=log)
    return trainer.run()


def load_for_inference(out_dir, device="cpu"):
    """(model, tokenizer) from out_dir/ckpt.npz, in eval mode."""
    path = out_dir if str(out_dir).endswith(".npz") else os.path.join(out_dir, CHECKPOINT)
    arrays, meta = load_checkpoint(path)
    model = GPT(GPTConfig.from_dict(meta["model_config"]))
    model.to(meta["train_config"].get("dtype", "float32"))
    lora = meta["train_config"].get("lora_rank", 0)
    if lora:
        apply_lora(model, **lora_options(meta["train_config"]))
    model.load_state_dict(model_state(arrays, meta.get("model_aliases", {})))
    if lora:
        merge_lora(model)       # plain weights: generation runs as fast as without LoRA
    model.to(device)
    model.eval()
    return model, tokenizer_from_dict(meta["tokenizer"])

