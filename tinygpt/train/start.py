"""The start of a run (floor 6): a new one (model, tokenizer and data from the config, or a
pretrained model with LoRA) or a resumed one (the config merged with the checkpoint's, the
data checked against its fingerprint, every state restored). Imports: numpy, autograd
(backend, fast.malloc), data, model, nn.lora, optim, train.config, train.precision,
train.ranks, train.zero.

`start(trainer)` fills the trainer's run state: config (on resume, merged with the
checkpoint's), model, tokenizer, train_data, val_data, data_info, precision, optimizer,
sampler, iter_num and history, and saving's saved_at and saved_ranks. A new run reads
before it writes: everything that can be refused is refused before out_dir is taken.
"""

import hashlib
import os

import numpy as np

from ..autograd import backend
from ..autograd.fast import malloc
from ..data import BatchSampler, CharTokenizer, check_token_ids, load_text, train_val_split
from ..data.tokenizers import load_tokenizer, require_tokenizer
from ..model import GPT
from ..model.checkpoint import CheckpointError, load_training_state
from ..nn.bottleneck import apply_adapters
from ..nn.lora import apply_lora
from ..optim import AdamW, configure_param_groups
from .config import resumed_config
from .ddp import agree
from .precision import Precision
from .ranks import start_rank, use_rank_gpu
from .zero import ZeroAdamW


def start(trainer):
    """Set up the run on every rank; an error of any rank is raised on every rank."""
    malloc.keep_freed_memory()      # a training process reuses its freed memory
    error = None
    try:
        _set_up(trainer)
    except Exception as e:  # noqa: BLE001 - raised on every rank by agree()
        error = e
    agree(trainer.group, error, "the set-up")
    start_rank(trainer)


def _set_up(trainer):
    cfg, folder = trainer.config, trainer.folder
    backend.array_module_for_device(backend.normalize_device(cfg.device))   # CuPy there?
    use_rank_gpu(trainer.group, cfg.device)
    folder.check()                  # a run in progress there is named at once
    if cfg.resume:
        if not os.path.isfile(folder.ckpt_path):
            raise FileNotFoundError(f"no checkpoint at {folder.ckpt_path} to resume from")
        folder.acquire()
        folder.remove_stale_files()
        resume(trainer, load_training_state(folder.ckpt_path))
        return
    folder.refuse_existing_run(cfg.overwrite)       # at once, before the data is read
    backend.manual_seed(cfg.seed)
    text = load_text(cfg.data, min_chars=cfg.block_size + 1)
    if cfg.init_from:
        # Fine-tuning: the model's shape and tokenizer come from the pretrained folder.
        trainer.model = GPT.from_pretrained(cfg.init_from, dropout=cfg.dropout)
        trainer.tokenizer = require_tokenizer(trainer.model)
        mc = trainer.model.config
        if cfg.block_size > mc.block_size:
            raise ValueError(f"block_size {cfg.block_size} is larger than the pretrained "
                             f"model's {mc.block_size}")
        if cfg.block_size < mc.block_size:
            trainer.model.crop_block_size(cfg.block_size)
        cfg.n_layer, cfg.n_head, cfg.n_embd = mc.n_layer, mc.n_head, mc.n_embd
        cfg.bias, cfg.gelu_approximate = mc.bias, mc.gelu_approximate
        if cfg.lora_rank:
            apply_lora(trainer.model, **cfg.lora_options())
        if cfg.adapter_size:
            apply_adapters(trainer.model, cfg.adapter_size)
    else:
        trainer.tokenizer = (CharTokenizer.from_text(text) if cfg.tokenizer == "char"
                             else load_tokenizer(cfg.tokenizer))
        trainer.model = GPT(cfg.model_config(trainer.tokenizer.vocab_size))
    _prepare_data(trainer, text)
    trainer.model.to(cfg.device)
    trainer.precision = Precision(cfg)
    trainer.precision.set_up(trainer.model)
    # Everything above only read; from here on this run owns out_dir.
    folder.acquire()
    folder.refuse_existing_run(cfg.overwrite)
    folder.remove_stale_files()
    _make_optimizer(trainer)
    trainer.sampler = BatchSampler(trainer.train_data, cfg.block_size, cfg.batch_size,
                                   seed=cfg.seed, device=cfg.device)
    trainer.iter_num = 0
    trainer.history = []


def resume(trainer, state):
    """Continue the run saved in `state` (load_training_state's): its config merged with
    the given settings, its data checked, every state restored."""
    meta = state.meta
    trainer.config, changed = resumed_config(trainer.config, meta.get("train_config"),
                                             trainer.given)
    cfg, group = trainer.config, trainer.group
    backend.array_module_for_device(cfg.device)    # the saved run's device, if not told another
    use_rank_gpu(group, cfg.device)
    if state.tokenizer is None or state.optimizer_state is None:
        raise CheckpointError(f"{state.path} holds no tokenizer or optimizer state; it "
                              "cannot be resumed")
    trainer.tokenizer = state.tokenizer
    # Mixed precision saves the float32 master weights: the model is made from them.
    trainer.model = state.build_model(
        dtype="float32" if cfg.dtype == "float16" else cfg.dtype, dropout=cfg.dropout)
    trainer.model.to(cfg.device)
    trainer.precision = Precision(cfg)
    trainer.precision.set_up(trainer.model)
    text = load_text(cfg.data, min_chars=cfg.block_size + 1)
    _prepare_data(trainer, text)
    check_data(trainer, state.path, meta.get("data"))
    _make_optimizer(trainer)
    saving = trainer.saving
    try:
        trainer.optimizer.load_state_dict(state.optimizer_state)
        trainer.sampler = BatchSampler(trainer.train_data, cfg.block_size, cfg.batch_size,
                                       seed=cfg.seed, device=cfg.device)
        trainer.sampler.load_state_dict(meta["sampler"])
        backend.set_rng_state(meta["rng"])
        backend.set_rng_state(meta["cuda_rng"], "cuda")
        trainer.precision.load_state(meta)
        trainer.iter_num = int(meta["iter_num"])
        # The evaluation at iter_num is made again on resume (with the same result).
        trainer.history = [h for h in meta["history"] if h["iter"] < trainer.iter_num]
        saving.saved_ranks = list(meta["ranks"])
        saved_world = int(meta["world_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{state.path}: the training state is not usable "
                              f"({type(e).__name__}: {e})") from None
    if trainer.iter_num < 0:
        raise CheckpointError(f"{state.path}: iter_num {trainer.iter_num} is negative")
    saving.saved_at = trainer.iter_num
    if saved_world != group.world_size:
        changed["ranks"] = (saved_world, group.world_size)
    trainer.log(f"resuming from {saving.path} at iteration {trainer.iter_num}"
                + ("; changed: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in
                                              changed.items()) if changed else ""))
    if saved_world < group.world_size:
        trainer.log(f"ranks {saved_world}-{group.world_size - 1} start batch and dropout "
                    "streams of their own (the checkpoint has none for them)")


def data_fingerprint(source, text):
    """What a checkpoint remembers of its training text: its source, its length in
    characters and in UTF-8 bytes (a file's size), and the sha256 of those bytes."""
    data = text.encode("utf-8", "surrogatepass")
    return {"source": str(source), "chars": len(text), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def check_data(trainer, path, saved):
    """Refuse (or with allow_data_change, note) training data that is not the text the
    checkpoint's run (at `path`) trained on (`saved`: its fingerprint)."""
    now = trainer.data_info
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the training state is not usable (it holds no "
                              "fingerprint of the training data)")
    if saved.get("sha256") == now["sha256"]:
        return
    message = (f"the training data differs from the checkpoint's: {now['source']} now has "
               f"{now['chars']:,} characters (sha256 {now['sha256'][:12]}...), the run "
               f"trained on {saved.get('source')!r} with {saved.get('chars')!r} "
               f"(sha256 {str(saved.get('sha256'))[:12]}...)")
    if not trainer.config.allow_data_change:
        raise ValueError(f"{message}; pass --allow_data_change true to train on it anyway "
                         "(the batches will not be the saved run's)")
    trainer.log(f"warning: {message}; training on it (--allow_data_change)")


def _prepare_data(trainer, text):
    cfg = trainer.config
    trainer.data_info = data_fingerprint(cfg.data, text)
    ids = np.asarray(trainer.tokenizer.encode(text), dtype=np.int64)
    # Once, here on the host: the model does not check ids already on a GPU.
    check_token_ids(ids, trainer.model.config.vocab_size)
    trainer.train_data, trainer.val_data = train_val_split(ids, 0.9)
    need = cfg.block_size + 1
    for name, split in (("training", trainer.train_data), ("validation", trainer.val_data)):
        if len(split) < need:
            raise ValueError(
                f"the {name} split has {len(split)} tokens, fewer than block_size + 1 = "
                f"{need}: use a longer text or a smaller --block_size")


def _make_optimizer(trainer):
    cfg = trainer.config
    weights = trainer.precision.weights(trainer.model)
    groups = configure_param_groups(weights.named_parameters(), cfg.weight_decay)
    trainer.optimizer = AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    if cfg.zero:        # AdamW's moments sharded over the ranks (zero.py)
        trainer.optimizer = ZeroAdamW(trainer.optimizer, trainer.group, cfg.grad_clip)
