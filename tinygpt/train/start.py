"""The start of a run (floor 6): a new one (model, tokenizer and data from the config, or a
pretrained model with LoRA) or a resumed one (the config merged with the checkpoint's, the
data checked against its fingerprint, every state restored). Imports: numpy, autograd
(backend, fast.malloc), data, model, nn.lora, optim, train.config, train.precision,
train.ranks, train.zero.

`start(trainer)` fills the trainer's run state: config (on resume, merged with the
checkpoint's), model, tokenizer, train_data, val_data, data_info, precision, optimizer,
sampler, iter_num and history, and saving's saved_at and saved_ranks. A new run reads
before it writes: everything that can be refused is refused before out_dir is taken.

Pruning masks (tinygpt/nn/pruning.py) are not part of a checkpoint: a run whose model was
pruned through the Python API is resumed with its masks by `restore_masks(trainer.model)`
before `trainer.run()` (see docs/compression.md).
"""

import hashlib
import os

import numpy as np

from .. import memory
from ..autograd import backend
from ..autograd.fast import malloc
from ..data import BatchSampler, CharTokenizer, check_token_ids, load_text, train_val_split
from ..data.tokenizers import load_tokenizer, require_tokenizer
from ..model import GPT
from ..model.checkpoint import CheckpointError, load_training_state
from ..model.moe import MoE
from ..model.sizes import count_params
from ..nn.bottleneck import apply_adapters
from ..nn.lora import LoraConfig, apply_lora, check_lora_options, lora_layers
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
            raise FileNotFoundError(
                f"no checkpoint at {folder.ckpt_path} to resume from"
                + (" (the run there stopped before its first checkpoint)"
                   if os.path.exists(folder.log_path) else "")
                + f": start a new run in {folder.path} without --resume")
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
        take_pretrained_shape(cfg, trainer.model.config, trainer.given)
        mc = trainer.model.config
        if cfg.block_size > mc.block_size:
            raise ValueError(f"block_size {cfg.block_size} is larger than the pretrained "
                             f"model's {mc.block_size}")
        if cfg.block_size < mc.block_size:
            trainer.model.crop_block_size(cfg.block_size)
        if cfg.lora_rank:
            apply_lora(trainer.model, **cfg.lora_options())
        if cfg.adapter_size:
            apply_adapters(trainer.model, cfg.adapter_size)
        apply_settings(trainer.model, cfg)
        trainer.model.train()       # from_pretrained gives eval mode; a run trains
        check_training_fits(cfg.dtype, trainer.model, shards=_moment_shards(trainer))
    else:
        trainer.tokenizer = (CharTokenizer.from_text(text) if cfg.tokenizer == "char"
                             else load_tokenizer(cfg.tokenizer))
        model_config = cfg.model_config(trainer.tokenizer.vocab_size)
        check_training_fits(cfg.dtype, n_params=count_params(model_config),
                            shards=_moment_shards(trainer))
        trainer.model = GPT(model_config)
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
    if getattr(trainer.model, "lora_config", None) is None:
        moot = [name for name in ("lora_alpha", "lora_dropout") if name in changed]
        if moot:
            raise ValueError(f"--{moot[0]} changes nothing: the run in {trainer.out_dir} "
                             "has no LoRA adapters; leave it out to continue the saved run")
    apply_settings(trainer.model, cfg)      # the changed settings reach the model
    check_training_fits(cfg.dtype, trainer.model, shards=_moment_shards(trainer))
    trainer.model.to(cfg.device)
    trainer.precision = Precision(cfg)
    trainer.precision.set_up(trainer.model)
    text = load_text(cfg.data, min_chars=cfg.block_size + 1)
    _prepare_data(trainer, text)
    check_data(trainer, state.path, meta.get("data"))
    _make_optimizer(trainer)
    saving = trainer.saving
    # The run's settings (betas, weight decay, ...: the config may change them on resume)
    # win over the saved groups' copies, which load_state_dict restores with the moments.
    settings = [{k: v for k, v in g.items() if k != "params"}
                for g in trainer.optimizer.param_groups]
    try:
        trainer.optimizer.load_state_dict(state.optimizer_state)
        for saved, setting in zip(trainer.optimizer.param_groups, settings):
            saved.update(setting)
        trainer.sampler = BatchSampler(trainer.train_data, cfg.block_size, cfg.batch_size,
                                       seed=cfg.seed, device=cfg.device)
        trainer.sampler.load_state_dict(meta["sampler"])
        backend.set_rng_state(meta["rng"])
        backend.set_rng_state(meta["cuda_rng"], "cuda")
        trainer.precision.load_state(meta, new_scale="loss_scale" in changed)
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


# The model's shape, fixed by a pretrained folder: TrainConfig's name -> a function of the
# folder's GPTConfig giving the value as TrainConfig spells it (None there is 0 here).
PRETRAINED_SHAPE = {name: (lambda mc, name=name: getattr(mc, name) or 0) if name in (
    "attn_window", "expert_hidden") else (lambda mc, name=name: getattr(mc, name)) for name in (
    "n_layer", "n_head", "n_embd", "bias", "gelu_approximate", "attn_window", "attn_pattern",
    "n_expert", "expert_top_k", "expert_hidden", "moe_every", "position", "rope_base",
    "rope_scale")}


def take_pretrained_shape(cfg, mc, given):
    """With init_from the folder's config `mc` fixes the model's shape: a flag in `given`
    (the caller's) with another value is refused, naming both; the others take the
    folder's values, so that the run records the shape it trains."""
    refused = []
    for name, value_of in PRETRAINED_SHAPE.items():
        value = value_of(mc)
        if name in given and getattr(cfg, name) != value:
            refused.append(f"--{name} {getattr(cfg, name)!r} (the pretrained model's: "
                           f"{value!r})")
        else:
            setattr(cfg, name, value)
    if refused:
        raise ValueError(f"--init_from {cfg.init_from}: the pretrained model fixes the "
                         f"model's shape, and these settings differ from it: "
                         f"{', '.join(refused)}; leave them out (or give the model's values)")


def apply_settings(model, cfg):
    """Put the run's settings that shape no parameter into the model: the experts'
    capacity and load-balancing coefficient, LoRA's alpha and dropout (dropout itself is
    the model's config when it is built). A resumed run applies its changed ones here."""
    model.config.expert_capacity = cfg.expert_capacity
    model.config.aux_loss_coef = cfg.aux_loss_coef
    for module in model.modules():
        if isinstance(module, MoE):
            module.capacity_factor = cfg.expert_capacity
    lora = getattr(model, "lora_config", None)
    if lora is not None:
        check_lora_options(lora.r, cfg.lora_alpha, cfg.lora_dropout)
        for _, layer in lora_layers(model):
            layer.alpha, layer.scaling = float(cfg.lora_alpha), cfg.lora_alpha / layer.rank
            layer.lora_dropout.p = float(cfg.lora_dropout)
        model.lora_config = LoraConfig(lora.r, float(cfg.lora_alpha), float(cfg.lora_dropout),
                                       lora.target_modules)


def check_training_fits(dtype, model=None, n_params=None, shards=1):
    """Refuse (ValueError) a run whose weights, gradients and AdamW's two moments (and,
    under mixed precision, the float32 master weights and their gradients) need more
    memory than this machine has: from the sizes alone, before the optimizer (or, given
    `n_params`, the model) is allocated. `model`: counted from its parameters (trained:
    those that require a gradient); else `n_params`, all trained. `shards`: the ranks
    ZeRO shares the moments over (each rank holds 1/shards of them)."""
    if model is not None:
        params = list(model.parameters())
        n_params = sum(p.data.size for p in params)
        trained = sum(p.data.size for p in params if p.requires_grad)
    else:
        trained = n_params
    if dtype == "float16":      # float16 weights and gradients; the float32 master copy
        # (every parameter, frozen ones too), its gradients and the moments
        nbytes = 2 * n_params + 2 * trained + 4 * n_params + 4 * trained \
            + 2 * 4 * trained // shards
    else:
        size = np.dtype(dtype).itemsize
        nbytes = size * n_params + size * trained + 2 * size * trained // shards
    memory.check_fits(nbytes, f"training a model of {n_params:,} parameters ({trained:,} "
                      f"trained, {dtype}): its weights, gradients and AdamW's moments"
                      + (" and the float32 master copy" if dtype == "float16" else ""))


def _moment_shards(trainer):
    """Over how many ranks AdamW's moments are shared: the world size under --zero 1."""
    return trainer.group.world_size if trainer.config.zero else 1


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
