"""Fine-tuning a GPT on a multiple-choice task, GPT-1's way (floor 6).

`python -m tinygpt finetune` runs `finetune(FinetuneConfig(...))`:

1. the task: train / val / test examples (a story and K endings, see tinygpt.data.cloze);
2. the model: a GPT pre-trained by `python -m tinygpt train` (--init_from its out_dir), a
   Hugging Face GPT-2 folder, or a new randomly initialised GPT (no --init_from);
3. GPT-1's input transformation: three special tokens added to the vocabulary and the
   embedding, each example turned into K rows `[start] story [delim] ending [clf]`,
   right-padded; the story is cut from the left when the longest row would not fit the
   model's block size (endings longer than half of it are cut from the right);
4. `GPTForMultipleChoice`: a linear head on the hidden state at each row's [clf] token,
   softmax over the K rows, loss L3 = L2 + lm_coef * L1 (the auxiliary language-modelling
   loss on the same rows);
5. GPT-1's recipe: Adam with weight decay 0.01 on the matrices, lr 6.25e-5 with a linear
   warm-up over 0.2% of the steps and a linear decay to 0, batch 32, 3 epochs, gradient
   norm clipped at 1, dropout 0.1 in the GPT and on the pooled hidden state;
6. validation accuracy after each epoch, test accuracy at the end; out_dir gets
   `ckpt.npz` (the classifier, `load_classifier` reads it) and `results.json`.

Parameter-efficient fine-tuning: `lora_rank` > 0 adds LoRA to the GPT's layers named by
`lora_targets` (tinygpt/nn/lora.py), `adapter_size` > 0 adds bottleneck adapters after
each block's attention and MLP (tinygpt/nn/bottleneck.py); either way the GPT is frozen
and only the adapters and the task head (`score`) are trained. The special tokens' new
embedding rows stay as drawn (N(0, 0.02)): the embedding is the tied output head, part of
the frozen base. The two methods are not combined (a run with both is refused). On a new
GPT (no init_from) the frozen base is random: a baseline, not a recipe. The checkpoint
rebuilds the adapters; with bottleneck adapters out_dir also gets `bottleneck/`, the
adapters and the head alone (`tinygpt.model.bottleneck.load_bottleneck`).

Like `train`, a run locks its out_dir (its RunFolder's FolderLock) and runs in one process
(MPI ranks are refused); Ctrl-C saves the classifier after the last finished step.

Imports: autograd, nn, optim, data, model, and train's config, start (the memory check),
inference, metrics, interrupts (signal handlers) and run_folder (the lock).
"""

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import nn, validate
from ..autograd import backend, no_grad
from ..autograd.tensor import Tensor
from ..data import CharTokenizer
from ..data.cloze import SPLITS, load_task
from ..files import atomic_write_text
from ..model import GPT, GPTConfig
from ..model.checkpoint import load_training_state, save_training_state
from ..model.bottleneck import save_bottleneck
from ..model.heads import HEADS, GPTForMultipleChoice, add_special_tokens
from ..nn.bottleneck import apply_adapters, check_bottleneck_options
from ..nn.lora import apply_lora, check_lora_options
from ..optim import AdamW, clip_grad_norm_, configure_param_groups, get_schedule
from .config import TrainConfig
from .distributed import launched_size
from .start import check_training_fits
from .inference import load_for_inference
from .metrics import TrainingError
from .interrupts import signal_handlers
from .run_folder import BOTTLENECK, CHECKPOINT, RunFolder

RESULTS = "results.json"


@dataclass
class FinetuneConfig:
    """A fine-tuning run; the optimisation defaults are GPT-1's."""

    task: str = "cloze"             # a folder with train.jsonl, val.jsonl, test.jsonl
    out_dir: str = "out-finetune"
    init_from: str = ""             # a `tinygpt train` out_dir, a GPT-2 folder, or "" (new)
    overwrite: bool = False
    # the model, when init_from is "" (a new, randomly initialised GPT with a char vocabulary)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    bias: bool = False
    gelu_approximate: str = "none"
    # GPT-1's fine-tuning recipe
    dropout: float = 0.1            # in the GPT (embeddings, attention, residual branches)
    clf_dropout: float = 0.1        # on the pooled hidden state
    lm_coef: float = 0.5            # lambda of L3 = L2 + lambda * L1
    learning_rate: float = 6.25e-5
    batch_size: int = 32
    epochs: int = 3
    warmup: float = 0.002           # fraction of the steps spent warming up
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    # parameter-efficient fine-tuning (see the module docstring): 0 turns each off
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "c_attn,c_proj,c_fc"    # comma-separated layer names
    adapter_size: int = 0           # bottleneck adapters' width m
    # system
    log_interval: int = 10
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "epochs",
                     "log_interval"):
            validate.positive_integer(name, getattr(self, name))
        for name in ("dropout", "clf_dropout", "warmup"):
            validate.probability(name, getattr(self, name), include_one=False)
        for name in ("lm_coef", "weight_decay", "grad_clip"):
            validate.real(name, getattr(self, name), minimum=0)
        validate.real("learning_rate", self.learning_rate, minimum=0, low_open=True)
        validate.choice("dtype", self.dtype, ("float32", "float64"))
        backend.normalize_device(self.device)
        for name in ("lora_rank", "adapter_size"):
            validate.integer(f"{name} (0: off)", getattr(self, name), minimum=0)
        if self.lora_rank and self.adapter_size:
            raise ValueError("lora_rank and adapter_size are two ways of fine-tuning few "
                             "parameters; choose one (LoRA and bottleneck adapters are not "
                             "combined)")
        if self.lora_rank:
            check_lora_options(**self.lora_options())
        if self.adapter_size:
            check_bottleneck_options(self.adapter_size)

    lora_options = TrainConfig.lora_options      # the same fields, the same meaning

    def method(self):
        """What is trained: "full", "LoRA rank r" or "bottleneck adapters of width m"."""
        if self.lora_rank:
            return f"LoRA rank {self.lora_rank}"
        if self.adapter_size:
            return f"bottleneck adapters of width {self.adapter_size}"
        return "full"


# --- GPT-1's input transformation --------------------------------------------------------
def encode_example(tokenizer, special, story, endings, block_size):
    """The K rows `[start] story [delim] ending [clf]` of one example, as lists of ids.

    special: {"_start_": id, "_delimiter_": id, "_classify_": id}. Every row fits in
    block_size: endings are cut to (block_size - 3) // 2 tokens, then the story keeps its
    last tokens, as many as the longest row leaves room for (the same story in every row).
    """
    start, delim, clf = (special[name] for name in ("_start_", "_delimiter_", "_classify_"))
    if block_size < 5:
        raise ValueError(f"block_size {block_size} leaves no room for an ending: a row is "
                         f"[start] story [delim] ending [clf], so block_size must be >= 5")
    ends = [tokenizer.encode(e)[:(block_size - 3) // 2] for e in endings]
    room = block_size - 3 - max(len(e) for e in ends)
    story_ids = tokenizer.encode(story)
    story_ids = story_ids[len(story_ids) - room:] if len(story_ids) > room else story_ids
    return [[start] + story_ids + [delim] + e + [clf] for e in ends]


def collate(rows_list):
    """Pad the rows of several examples (each K lists of ids) on the right into
    input_ids (B, K, T) int64 and attention_mask (B, K, T), T the longest row."""
    B, K = len(rows_list), len(rows_list[0])
    T = max(len(row) for rows in rows_list for row in rows)
    ids = np.zeros((B, K, T), dtype=np.int64)
    mask = np.zeros((B, K, T), dtype=np.int64)
    for b, rows in enumerate(rows_list):
        for k, row in enumerate(rows):
            ids[b, k, :len(row)] = row
            mask[b, k, :len(row)] = 1
    return ids, mask


def encode_split(examples, tokenizer, special, block_size, name="task"):
    """[(rows, label)] for a list of ClozeExample. An ending that encodes to no tokens
    (rows the head could not tell apart) raises ValueError naming the example (`name`:
    the split, in the message)."""
    out = []
    for number, e in enumerate(examples, start=1):
        for k, ending in enumerate(e.endings, start=1):
            if not tokenizer.encode(ending):
                raise ValueError(f"{name} example {number}: ending {k} ({ending!r}) encodes to "
                                 f"no tokens; every ending needs at least one")
        out.append((encode_example(tokenizer, special, e.story, e.endings, block_size),
                    e.label))
    return out


def batches(encoded, batch_size, device, rng=None):
    """(input_ids, attention_mask, labels) Tensors on `device`, batch_size examples each
    (the last batch may be smaller); shuffled when `rng` is given."""
    order = rng.permutation(len(encoded)) if rng is not None else np.arange(len(encoded))
    for i in range(0, len(order), batch_size):
        chosen = [encoded[j] for j in order[i:i + batch_size]]
        ids, mask = collate([rows for rows, _ in chosen])
        labels = np.array([label for _, label in chosen], dtype=np.int64)
        yield tuple(Tensor(backend.to_device(a, device)) for a in (ids, mask, labels))


def accuracy(model, encoded, batch_size=32, device="cpu"):
    """The fraction of examples whose right ending gets the highest logit (eval mode, no
    graph, no language-modelling head)."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with no_grad():
            for ids, mask, labels in batches(encoded, batch_size, device):
                logits = model(ids, attention_mask=mask).logits.data
                correct += int((logits.argmax(axis=1) == labels.data).sum())
    finally:
        model.train(was_training)
    return correct / len(encoded)


# --- the model ----------------------------------------------------------------------------
def _base_model(cfg, task):
    """(GPT, tokenizer) to fine-tune: pre-trained when init_from is given, else new."""
    if not cfg.init_from:
        texts = [task.pretrain_text] + [e.story + "".join(e.endings)
                                        for split in SPLITS for e in task.split(split)]
        tokenizer = CharTokenizer.from_text("".join(texts))
        config = GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size,
                           n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                           dropout=cfg.dropout, bias=cfg.bias,
                           gelu_approximate=cfg.gelu_approximate)
        return GPT(config), tokenizer
    path = cfg.init_from
    if os.path.isfile(os.path.join(path, CHECKPOINT)) or str(path).endswith(".npz"):
        model, tokenizer = load_for_inference(path)
    else:
        from ..data.tokenizers import require_tokenizer
        model = GPT.from_pretrained(path)
        tokenizer = require_tokenizer(model)
    # GPT-1 fine-tunes with dropout 0.1 whatever the pre-training used.
    model.config.dropout = cfg.dropout
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = cfg.dropout
    return model, tokenizer


def build_classifier(cfg, task):
    """(GPTForMultipleChoice, tokenizer, special token ids) for a run, on its device."""
    backend.manual_seed(cfg.seed)
    gpt, tokenizer = _base_model(cfg, task)
    special = add_special_tokens(gpt)
    model = GPTForMultipleChoice.from_gpt(gpt, clf_dropout=cfg.clf_dropout)
    if cfg.lora_rank:
        apply_lora(model, **cfg.lora_options())     # freezes all but A and B
        model.score.requires_grad_(True)            # the head is trained too
    elif cfg.adapter_size:
        apply_adapters(model, cfg.adapter_size, trainable=("score",))
    model.to(cfg.dtype)
    model.to(cfg.device)
    return model.train(), tokenizer, special


# --- checkpoints --------------------------------------------------------------------------
def save_classifier(path, model, tokenizer, special, extra=None):
    """Write a classifier checkpoint (`ckpt.npz` format, meta "model_class" naming the
    head) that `load_classifier` reads and plain-GPT loaders refuse."""
    save_training_state(path, model, tokenizer=tokenizer, dtype=str(model.dtype),
                        special_tokens=special, **(extra or {}))


def load_classifier(path, device="cpu"):
    """(model, tokenizer, special token ids) from a classifier checkpoint (a file, or the
    out_dir holding ckpt.npz), in eval mode."""
    path = path if str(path).endswith(".npz") else os.path.join(path, CHECKPOINT)
    state = load_training_state(path, model_class=None)
    name = state.meta.get("model_class", "GPT")
    if name not in HEADS:
        raise ValueError(f"{path} holds a {name}, not a classifier: load it with "
                         f"tinygpt.train.load_for_inference")
    model = state.build_model(dtype=state.meta.get("dtype"))
    model.to(device)
    return model.eval(), state.tokenizer, state.meta["special_tokens"]


# --- the run ------------------------------------------------------------------------------
def finetune(config=None, log=None, **overrides):
    """Fine-tune and evaluate (see the module docstring); returns the results dict.

    One process only: started as several MPI ranks it refuses (each would write out_dir).
    out_dir is locked (`FolderLock`, as `train` locks its out_dir) from the start of the
    training to the end: a folder another run holds is refused, with or without overwrite.
    Ctrl-C saves the classifier as it is after the last finished step (ckpt.npz, and
    results.json with "interrupted_at_step" and no test accuracy), then raises
    KeyboardInterrupt saying so; before the first step nothing is saved."""
    cfg = config if config is not None else FinetuneConfig(**overrides)
    log = log or (lambda line: print(line, flush=True))
    ranks = launched_size()
    if ranks > 1:
        raise RuntimeError(f"finetune runs in one process, but it was started as {ranks} MPI "
                           f"ranks, each of which would write {cfg.out_dir}: run it without "
                           f"mpiexec")
    ckpt_path = os.path.join(cfg.out_dir, CHECKPOINT)
    folder = RunFolder(cfg.out_dir)
    folder.check()                  # a run in progress there is named at once
    _refuse_existing(cfg, ckpt_path)
    task = load_task(cfg.task)
    model, tokenizer, special = build_classifier(cfg, task)
    block_size = model.config.block_size
    data = {split: encode_split(task.split(split), tokenizer, special, block_size, split)
            for split in SPLITS}
    with folder.lock:
        _refuse_existing(cfg, ckpt_path)     # written while this run was setting up?
        folder.remove_stale_files()
        return _run(cfg, log, task, model, tokenizer, special, data, ckpt_path)


def _refuse_existing(cfg, ckpt_path):
    if os.path.exists(ckpt_path) and not cfg.overwrite:
        raise FileExistsError(f"{ckpt_path} already exists: choose another --out_dir (or "
                              f"--overwrite to replace it)")


def _run(cfg, log, task, model, tokenizer, special, data, ckpt_path):
    block_size = model.config.block_size
    steps_per_epoch = math.ceil(len(data["train"]) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = math.ceil(cfg.warmup * total)
    schedule = get_schedule("linear", max_lr=cfg.learning_rate, min_lr=0.0,
                            warmup_iters=warmup, lr_decay_iters=total)
    check_training_fits(cfg.dtype, model)       # before AdamW's moments are allocated
    optimizer = AdamW(configure_param_groups(model.named_parameters(), cfg.weight_decay),
                      lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    K = len(task.train[0].endings)
    log(f"task {cfg.task}: {', '.join(f'{len(data[s])} {s}' for s in SPLITS)} examples of "
        f"{K} choices; model {model.num_parameters() / 1e6:.2f}M parameters ("
        f"{model.num_parameters(only_trainable=True):,} trained: {cfg.method()}), block "
        f"{block_size}, vocabulary {model.config.vocab_size} (3 special tokens added); "
        f"{total} steps ({cfg.epochs} epochs of {steps_per_epoch})")
    rng = np.random.default_rng(cfg.seed)
    history, step, start = [], 0, time.perf_counter()

    def save(results):
        os.makedirs(cfg.out_dir, exist_ok=True)
        save_classifier(ckpt_path, model, tokenizer, special,
                        {"finetune_config": asdict(cfg), "results": results})
        if cfg.adapter_size:
            save_bottleneck(model, os.path.join(cfg.out_dir, BOTTLENECK), overwrite=True)
        atomic_write_text(os.path.join(cfg.out_dir, RESULTS),
                          json.dumps(results, indent=2) + "\n")

    try:
        for epoch in range(cfg.epochs):
            mark, mark_step = time.perf_counter(), step
            for ids, mask, labels in batches(data["train"], cfg.batch_size, cfg.device, rng):
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                out = model(ids, labels=labels, attention_mask=mask, lm_coef=cfg.lm_coef)
                loss = out.loss.item()
                if not math.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at step {step}; try a lower "
                                        f"--learning_rate")
                out.loss.backward()
                if cfg.grad_clip > 0:
                    clip_grad_norm_(model.parameters(), cfg.grad_clip)
                with _ctrl_c_after():           # the update is applied whole or not at all
                    optimizer.step()
                    step += 1
                optimizer.zero_grad(set_to_none=True)
                if step % cfg.log_interval == 0 or step == total:
                    lm = f", lm loss {out.lm_loss.item():.4f}" if out.lm_loss is not None else ""
                    ms = (time.perf_counter() - mark) * 1e3 / (step - mark_step)
                    log(f"step {step}/{total}: loss {loss:.4f} (clf {out.clf_loss.item():.4f}"
                        f"{lm}), lr {lr:.2e}, {ms:.0f} ms/step")
                    mark, mark_step = time.perf_counter(), step
            val = accuracy(model, data["val"], cfg.batch_size, cfg.device)
            history.append({"epoch": epoch + 1, "step": step, "val_accuracy": val})
            log(f"epoch {epoch + 1}: validation accuracy {val:.4f}")
        test = accuracy(model, data["test"], cfg.batch_size, cfg.device)
    except KeyboardInterrupt:
        if step == 0:
            raise KeyboardInterrupt(f"interrupted before the first step of {total}: nothing "
                                    f"saved") from None
        model.zero_grad(set_to_none=True)
        save({"interrupted_at_step": step, "test_accuracy": None,
              "val_accuracy": history[-1]["val_accuracy"] if history else None,
              "test_examples": len(data["test"]), "chance": 1 / K, "history": history,
              "seconds": time.perf_counter() - start, "config": asdict(cfg)})
        raise KeyboardInterrupt(f"interrupted at step {step}/{total}: the classifier so far is "
                                f"saved in {ckpt_path} (not tested)") from None
    results = {"test_accuracy": test, "val_accuracy": history[-1]["val_accuracy"],
               "trainable_parameters": model.num_parameters(only_trainable=True),
               "test_examples": len(data["test"]), "chance": 1 / K, "history": history,
               "seconds": time.perf_counter() - start, "config": asdict(cfg)}
    log(f"test accuracy {test:.4f} on {len(data['test'])} examples (chance {1 / K:.2f})")
    save(results)
    return results


@contextlib.contextmanager
def _ctrl_c_after():
    """Hold a Ctrl-C (SIGINT) back until the block has run, then raise it. Outside the main
    thread (no signal handlers there) the block just runs."""
    caught = []
    with signal_handlers((signal.SIGINT,), lambda signum, frame: caught.append(signum)):
        yield
    if caught:
        raise KeyboardInterrupt
