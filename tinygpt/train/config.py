"""`TrainConfig`: every knob of a training run, checked as a whole before anything is
read or written, and the rules for resuming a run (floor 6). Imports: autograd (the
device names), optim (the schedules), model (GPTConfig), train.parallel.

On `--resume` a run continues the one saved in out_dir, so the settings come from its
checkpoint. Settings the caller gives explicitly may change some of them:

- the model's shape, its tokenizer and dtype, the weights it started from and the seed of
  its random streams cannot change (FIXED_ON_RESUME): a different value is refused;
- the data may change only with allow_data_change (the batches then differ from the
  saved run's);
- everything else (the length of the run, the schedule, the batch size, dropout,
  evaluation, the device, ...) may change, and the log says what changed.
"""

from dataclasses import asdict, dataclass, fields

from .. import validate
from ..autograd import backend
from ..autograd.fast import threads
from ..model import GPTConfig
from ..optim import get_schedule
from ..optim.amp import check_scale
from ..nn.lora import check_lora_options
from ..nn.bottleneck import check_bottleneck_options
from .distributed import launched_size, resolve as resolve_distributed
from .parallel import auto_processes, check_processes

# Fixed when a run is resumed: the model's shape and what defines its weights and streams.
FIXED_ON_RESUME = ("n_layer", "n_head", "n_embd", "block_size", "bias", "gelu_approximate",
                   "attn_window", "attn_pattern", "n_expert", "expert_top_k", "expert_hidden",
                   "moe_every", "lora_rank", "lora_targets", "adapter_size", "tokenizer", "dtype",
                   "init_from", "seed", "position", "rope_base", "rope_scale")
# Fields of one invocation only, never taken from a checkpoint.
# (zero too: how this launch lays out the optimizer state; its checkpoints are AdamW's.)
INVOCATION = ("out_dir", "resume", "overwrite", "allow_data_change", "distributed", "zero")


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are nanoGPT's small CPU recipe for
    tiny Shakespeare (4 layers, 4 heads, 128 channels, 64 tokens of context).

    Every field is checked when the config is made: a bad value raises ValueError (or
    TypeError) naming the field, before any file is read or written.
    """

    # input and output
    out_dir: str = "out"
    data: str = "default"           # "default" (embedded), "shakespeare", or a text file
    tokenizer: str = "char"         # "char", "gpt2", or the path of a saved BPE tokenizer
    resume: bool = False            # continue from out_dir/ckpt.npz
    init_from: str = ""             # a pretrained GPT-2 folder (config.json + model.safetensors)
    overwrite: bool = False         # allow replacing an existing run in out_dir
    allow_data_change: bool = False  # resume even though the data file changed
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
    # GPT-3's banded layers and a mixture of experts (see GPTConfig; 0 turns each off)
    attn_window: int = 0            # a banded layer's window (0: every layer dense)
    attn_pattern: str = "dense"     # with attn_window: "banded", "alternate"
    n_expert: int = 0               # experts per mixture-of-experts block (0: a dense MLP)
    expert_top_k: int = 2
    expert_hidden: int = 0          # each expert's hidden width (0: 4 * n_embd / top_k)
    expert_capacity: float = 1.25
    moe_every: int = 1
    aux_loss_coef: float = 0.01
    position: str = "learned"       # "learned" (wpe) or "rotary" (RoPE; see GPTConfig)
    rope_base: float = 10000.0
    rope_scale: float = 1.0
    # LoRA (with init_from; see tinygpt/nn/lora.py): rank 0 trains every parameter
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "c_attn,c_proj,c_fc"    # comma-separated layer names
    # bottleneck adapters (with init_from; see tinygpt/nn/bottleneck.py): their width, 0 = none
    adapter_size: int = 0
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
    dtype: str = "float32"          # "float32", "float64", or "float16": mixed precision
    # Mixed precision (dtype float16; see tinygpt/optim/amp.py): the loss scale to start
    # with, and the good steps after which it doubles (0: a fixed scale).
    loss_scale: float = 65536.0
    loss_scale_window: int = 2000
    seed: int = 1337
    reference_ops: bool = False     # every op and AdamW on their reference code (slower;
                                    # the same losses to rounding): tg.use_reference_ops()
    processes: int = 0              # CPU processes sharing each batch; 0: auto (2 on Linux
                                    # with 2+ cores, else 1); see tinygpt/train/parallel.py
    distributed: str = "auto"       # "mpi": this process is one rank of an MPI launch (each
                                    # rank trains on batch_size rows of its own); "auto":
                                    # mpi when mpiexec started 2+ ranks; see distributed.py
    zero: int = 0                   # 1: ZeRO stage 1 over the MPI ranks, AdamW's moments
                                    # sharded (train/zero.py); 0: every rank holds them all

    def __post_init__(self):
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), type(f.default))
        for name in ("eval_interval", "eval_iters", "log_interval", "n_layer", "n_head",
                     "n_embd", "block_size", "batch_size", "gradient_accumulation_steps"):
            validate.positive_integer(name, getattr(self, name))
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "loss_scale_window"):
            validate.integer(name, getattr(self, name), minimum=0)
        for name in ("out_dir", "data", "tokenizer"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        validate.real("learning_rate", self.learning_rate, minimum=0, low_open=True)
        check_scale(self.loss_scale, "loss_scale")
        for name in ("min_lr", "weight_decay", "grad_clip"):     # grad_clip 0: no clipping
            validate.real(name, getattr(self, name), minimum=0)
        for name in ("dropout", "beta1", "beta2"):
            validate.real(name, getattr(self, name), minimum=0.0, maximum=1.0, high_open=True)
        # The schedule checks its own arguments (min_lr <= learning_rate, the decay span).
        get_schedule(self.schedule, max_lr=self.learning_rate, min_lr=self.min_lr,
                     warmup_iters=self.warmup_iters, lr_decay_iters=self.lr_decay_iters)
        if self.dtype == "bfloat16":
            raise ValueError("dtype 'bfloat16': neither NumPy nor CuPy has a bfloat16 dtype; "
                             "use 'float16' (mixed precision, with loss scaling) or 'float32'")
        if self.dtype not in ("float32", "float64", "float16"):
            raise ValueError(f"dtype must be 'float32', 'float64' or 'float16' (mixed "
                             f"precision), got {self.dtype!r}")
        backend.normalize_device(self.device)
        self.model_config(vocab_size=1)         # n_embd % n_head, gelu_approximate, ...
        if self.n_expert and self.moe_every > self.n_layer:
            raise ValueError(f"moe_every {self.moe_every} puts the experts in no layer of "
                             f"n_layer {self.n_layer} (every moe_every-th block has them): "
                             f"with n_expert > 0, give a moe_every of at most n_layer")
        if self.processes < 0:
            raise ValueError(f"processes must be 0 (auto) or a positive integer, got "
                             f"{self.processes!r}")
        if self.dtype == "float16" and self.processes > 1:
            raise ValueError("dtype float16 (mixed precision) runs in one process: use "
                             "--processes 1 (or 0)")
        ranks = resolve_distributed(self.distributed)
        if ranks == "mpi" and self.processes > 1:
            raise ValueError(f"processes={self.processes} forks processes inside each MPI "
                             "rank; with distributed 'mpi' start more ranks instead "
                             "(mpiexec -n N) and leave processes at 0 or 1")
        self._check_zero(ranks)
        if self.processes != 0:
            check_processes(self.processes, self.device)
            if self.processes > self.batch_size:
                raise ValueError(f"processes ({self.processes}) must not exceed batch_size "
                                 f"({self.batch_size}): each process takes at least one row")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (no LoRA) or a positive integer, got "
                             f"{self.lora_rank!r}")
        if self.lora_rank:
            if not (self.init_from or self.resume):
                raise ValueError("lora_rank adapts a pre-trained model: give --init_from too")
            check_lora_options(**self.lora_options())
        validate.integer("adapter_size (0: no bottleneck adapters)", self.adapter_size,
                         minimum=0)
        if self.adapter_size:
            if not (self.init_from or self.resume):
                raise ValueError("adapter_size adapts a pre-trained model: give --init_from "
                                 "too")
            if self.lora_rank:
                raise ValueError("lora_rank and adapter_size are not combined: choose LoRA or "
                                 "bottleneck adapters")
            check_bottleneck_options(self.adapter_size)

    def _check_zero(self, ranks):
        if self.zero not in (0, 1):
            raise ValueError(f"zero must be 0 (off) or 1 (ZeRO stage 1: AdamW's moments "
                             f"sharded over the MPI ranks), got {self.zero!r}; stage 2 is "
                             "not offered (stage 1 frees the whole gradients after their "
                             "reduce-scatter already)")
        if not self.zero:
            return
        refused = []
        if ranks != "mpi" or launched_size() == 1:
            refused.append("one process (start 2 or more ranks: mpiexec -n N python -m "
                           "tinygpt train --zero 1)")
        if self.processes > 1:
            refused.append(f"--processes {self.processes} (forked processes share one "
                           "optimizer: leave processes at 0 or 1)")
        if self.dtype == "float16":
            refused.append("dtype float16 (mixed precision's float32 master weights and "
                           "loss scale are not sharded: use float32 or float64)")
        if backend.normalize_device(self.device) != "cpu":
            refused.append(f"device {self.device!r} (the shards travel by MPI on the host: "
                           "train on the CPU, or without --zero on GPUs)")
        if self.stats:
            refused.append("--stats (it reads every parameter's whole gradient, which no "
                           "rank keeps under ZeRO)")
        if refused:
            raise ValueError("zero 1 cannot run with " + "; ".join(refused))

    def lora_options(self):
        """apply_lora's keyword arguments for this run's LoRA settings."""
        return dict(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                    targets=tuple(t.strip() for t in self.lora_targets.split(",") if t.strip()))

    def resolved_processes(self):
        """The processes a step runs on: `processes`, or for 0 (auto) `auto_processes`:
        two on Linux with at least two usable cores (CPU, batch of 2+ rows), else one (and
        one in each rank of an MPI launch, and under mixed precision)."""
        if self.processes:
            return self.processes
        if resolve_distributed(self.distributed) == "mpi" or self.dtype == "float16":
            return 1                # each MPI rank is one process (distributed.py)
        return auto_processes(threads.usable_cores(), self.batch_size, self.device)

    def model_config(self, vocab_size):
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout,
                         bias=self.bias, gelu_approximate=self.gelu_approximate,
                         attn_window=self.attn_window or None, attn_pattern=self.attn_pattern,
                         n_expert=self.n_expert, expert_top_k=self.expert_top_k,
                         expert_hidden=self.expert_hidden or None,
                         expert_capacity=self.expert_capacity, moe_every=self.moe_every,
                         aux_loss_coef=self.aux_loss_coef, position=self.position,
                         rope_base=self.rope_base, rope_scale=self.rope_scale)


def _check_type(name, value, kind):
    """A field's value must have its default's type (an int is a fine float; a float
    field may be infinite here, its range is checked apart): validate.ArgumentTypeError."""
    if kind is bool:
        validate.boolean(name, value)
    elif kind is int:
        validate.integer(name, value)
    elif kind is float:
        validate.real(name, value, finite=False)
    elif not isinstance(value, kind):
        raise validate.ArgumentTypeError(f"{name} must be a string, got "
                                         f"{type(value).__name__} {value!r}")


def non_default_fields(config):
    """The names of the fields whose value differs from TrainConfig's default."""
    return {f.name for f in fields(TrainConfig) if getattr(config, f.name) != f.default}


def resumed_config(config, saved, given):
    """The config of a run resumed from a checkpoint whose TrainConfig was `saved` (a dict).

    Fields not in `given` (the names the caller set explicitly) take the saved values;
    given ones must obey the rules of the module docstring. Returns (config, changed):
    changed maps each field that differs from the saved run to (saved, now).
    """
    if not isinstance(saved, dict):
        raise ValueError("the checkpoint holds no training config (train_config)")
    values, changed, refused = asdict(config), {}, []
    for f in fields(TrainConfig):
        name = f.name
        if name in INVOCATION or name not in saved:
            continue
        if name not in given:
            values[name] = saved[name]
        elif values[name] != saved[name]:
            if name in FIXED_ON_RESUME or (name == "data" and not config.allow_data_change):
                refused.append(f"--{name} {values[name]!r} (the checkpoint's: {saved[name]!r})")
            else:
                changed[name] = (saved[name], values[name])
    if refused:
        raise ValueError(
            "a resumed run keeps its model, tokenizer, data and random streams, but these "
            f"settings differ from the checkpoint's: {', '.join(refused)}; leave them out to "
            "continue the saved run"
            + (", pass --allow_data_change true to train on other data"
               if any(r.startswith("--data ") for r in refused) else "")
            + ", or start a new run in another --out_dir")
    try:
        return TrainConfig(**values), changed
    except (TypeError, ValueError) as e:
        raise ValueError(f"the checkpoint's training config is not valid: {e}") from None
