"""Training checkpoints: what a run's checkpoint holds and how it is checked (floor 5). The
file itself (a zip of `.npy` arrays and one JSON record, written atomically, read with
suspicion) is checkpoint_file.py's; its names are re-exported here. Imports: numpy, the
standard library, autograd, data (tokenizers), nn, memory, model.

A checkpoint holds the model's parameters, the optimizer's state, the model config, the
tokenizer, and whatever else the trainer adds (its config, the iteration, every random
generator's state), so `--resume` continues exactly where training stopped:

    save_training_state("out/ckpt.npz", model, optimizer, tokenizer, iter_num=100, ...)
    state = load_training_state("out/ckpt.npz")
    model = state.build_model(); optimizer.load_state_dict(state.optimizer_state)

Model parameters are `model/<state_dict key>` (the tied head stored once, named in
"model_aliases"); the optimizer's arrays are `optim/...`, referenced from its JSON state
as {"__array__": name}.

Reading checks the training state before any array is read (after the file's own checks):
the model config's parameter count must fit in the file and in this machine's memory
(checked from the sizes alone, before a model is built); every model array must have the
name, shape and dtype the config implies, and every other array must be named in the JSON
(the optimizer's shaped like a parameter). A file that fails any check raises
CheckpointError naming the file and the problem.
"""

import math
import os

from ..data.tokenizers import tokenizer_from_dict
from ..memory import check_fits, format_bytes
from ..nn.init import skipping_init
from ..nn.lora import LoraConfig, apply_lora, lora_parameter_shapes
from ..nn.bottleneck import BottleneckConfig, apply_adapters, bottleneck_parameter_shapes
from .checkpoint_file import (FORMAT, VERSION, CheckpointError, array_references,  # noqa: F401
                              join_arrays, load_checkpoint, save_checkpoint, split_arrays)
from .config import GPTConfig
from .sizes import count_params, empty_gpt, parameter_shapes

MODEL, OPTIM = "model/", "optim/"


# --- a training run's state ------------------------------------------------------------------
def save_training_state(path, model, optimizer=None, tokenizer=None, **state):
    """Write `model` (its parameters and config), the optimizer's state and the tokenizer,
    plus `state` (JSON-serialisable values; arrays anywhere in it are stored as arrays),
    to the checkpoint `path`, atomically."""
    arrays, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        if id(t.data) in seen:             # the tied head: stored once
            aliases[key] = seen[id(t.data)]
            continue
        seen[id(t.data)] = key
        arrays[MODEL + key] = t.numpy()
    meta = {"model_config": model.config.to_dict(), "model_aliases": aliases}
    if type(model).__name__ != "GPT":             # a task head: its class and options
        meta["model_class"] = type(model).__name__
        meta["head_options"] = model.head_options()
    if getattr(model, "lora_config", None) is not None:     # the adapters' structure
        meta["lora"] = model.lora_config.to_dict()
    if getattr(model, "bottleneck_config", None) is not None:   # bottleneck adapters too
        meta["bottleneck"] = model.bottleneck_config.to_dict()
    if optimizer is not None:
        meta["optimizer"] = split_arrays(optimizer.state_dict(), arrays, OPTIM)
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    for name, value in state.items():
        meta[name] = split_arrays(value, arrays, f"{name}/")
    save_checkpoint(path, arrays, meta)


class TrainingState:
    """A checkpoint read back by `load_training_state`.

    config:           the model's GPTConfig
    model_state:      {state_dict key: NumPy array}, the tied head included
    optimizer_state:  the optimizer's `state_dict()`, or None
    tokenizer:        the tokenizer, or None
    meta:             everything else that was saved ({name: value})
    """

    def __init__(self, path, config, model_state, optimizer_state, tokenizer, meta):
        self.path, self.config = path, config
        self.model_state, self.optimizer_state = model_state, optimizer_state
        self.tokenizer, self.meta = tokenizer, meta

    def build_model(self, dtype=None, dropout=None):
        """The model with the saved parameters (a GPT, or the saved task head on one, with
        its LoRA or bottleneck adapters when it was saved with them), in `dtype` (default: the saved
        one), with the saved dropout unless `dropout` is given; in training mode, on the
        CPU."""
        config = self.config
        if dropout is not None:
            config = GPTConfig.from_dict({**config.to_dict(), "dropout": dropout})
        saved = self.model_state["transformer.wte.weight"].dtype
        model = empty_model(config, dtype or saved, self.meta.get("model_class", "GPT"),
                            self.meta.get("head_options"), self.meta.get("lora"),
                            self.meta.get("bottleneck"))
        model.load_state_dict(self.model_state)
        return model


def load_training_state(path, model_class="GPT"):
    """Read and check a checkpoint written by `save_training_state` (see the module
    docstring for the checks); returns a TrainingState. model_class: as `load_checkpoint`'s."""
    path = os.fspath(path)
    arrays, meta = load_checkpoint(path, check=lambda meta, headers: _check_training_state(
        meta, headers, path), model_class=model_class)
    config = GPTConfig.from_dict(meta["model_config"])
    model_state = {k[len(MODEL):]: v for k, v in arrays.items() if k.startswith(MODEL)}
    for alias, target in meta.get("model_aliases", {}).items():
        model_state[alias] = model_state[target]
    skip = {"format", "version", "model_config", "model_aliases", "optimizer", "tokenizer"}
    try:
        optimizer_state = join_arrays(meta["optimizer"], arrays) if "optimizer" in meta \
            else None
        rest = {k: join_arrays(v, arrays) for k, v in meta.items() if k not in skip}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: a malformed array reference ({e!r:.200})") from None
    tokenizer = None
    if "tokenizer" in meta:
        try:
            tokenizer = tokenizer_from_dict(meta["tokenizer"], where=f"{path}: the tokenizer")
        except (TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(str(e)) from None
        if tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} token ids "
                                  f"but the model's vocab_size is {config.vocab_size}")
    return TrainingState(path, config, model_state, optimizer_state, tokenizer, rest)


def _check_training_state(meta, headers, path):
    """The checks made from the JSON and the `.npy` headers, before any array is read."""
    def refuse(message):
        raise CheckpointError(f"{path}: {message}")

    try:
        config = GPTConfig.from_dict(meta.get("model_config"))
    except (TypeError, ValueError, AttributeError) as e:
        refuse(f"model_config is not a GPT config ({e})")
    model = {name[len(MODEL):]: header for name, header in headers.items()
             if name.startswith(MODEL)}
    dtypes = {dtype for _, dtype in model.values()}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        refuse(f"the model's arrays must share one float dtype, found "
               f"{sorted(map(str, dtypes)) or 'no arrays'}")
    itemsize = next(iter(dtypes)).itemsize
    # From the sizes alone, before listing a single name: a config asking for a million
    # layers is refused here, not after building them.
    n_params = count_params(config)
    sizes = (f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
             f"block_size={config.block_size}, vocab_size={config.vocab_size}")
    stored = os.path.getsize(path)
    if n_params * itemsize > stored:
        refuse(f"model_config ({sizes}) describes {n_params:,} parameters "
               f"({format_bytes(n_params * itemsize)}), but the file is only "
               f"{format_bytes(stored)}: the config does not match the weights")
    try:
        check_fits(n_params * itemsize, f"the model of model_config ({sizes})")
    except ValueError as e:
        refuse(str(e))

    try:
        expected = _expected_shapes(config, meta)
    except (TypeError, ValueError, KeyError) as e:
        refuse(f"its model_class, head_options, lora or bottleneck do not describe a model ({e})")
    aliases = meta.get("model_aliases", {})
    if not isinstance(aliases, dict) or any(
            a not in expected or t not in model or a in model for a, t in aliases.items()):
        refuse(f"model_aliases {aliases!r:.200} does not name tied parameters of the model")
    problems = []
    missing = [k for k in expected if k not in model and k not in aliases]
    unexpected = [k for k in model if k not in expected]
    if missing:
        problems.append(f"missing parameter(s) {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected parameter(s) {_some(unexpected)}")
    for key, (shape, _) in model.items():
        if key in expected and shape != expected[key]:
            problems.append(f"{key} has shape {shape}, the config implies {expected[key]}")
    # Every other array must be referenced from the JSON: the optimizer's shaped like a
    # parameter (or a single number), another saved entry's as it is (the file bounds it).
    referenced, optimizer = set(), set()
    array_references(meta.get("optimizer"), optimizer)
    for name, value in meta.items():
        if name not in ("format", "version", "model_config", "model_aliases", "tokenizer"):
            array_references(value, referenced)
    shapes = set(expected.values())
    for name, (shape, _) in headers.items():
        if name.startswith(MODEL):
            continue
        if name not in referenced:
            problems.append(f"unexpected array {name!r}")
        elif name in optimizer and shape not in shapes and math.prod(shape) > 1:
            problems.append(f"{name!r} has shape {shape}, the shape of no parameter")
    missing_arrays = sorted(referenced - headers.keys())
    if missing_arrays:
        problems.append(f"missing array(s) {_some(missing_arrays)}")
    if problems:
        refuse("does not fit its model_config:\n  " + "\n  ".join(problems[:8]))


HEADS = ("GPTForMultipleChoice", "GPTForSequenceClassification")


def _expected_shapes(config, meta):
    """{state_dict key: shape} of the model a checkpoint holds: GPT(config), with a task
    head's score layer (meta "model_class", "head_options") and LoRA adapters (meta
    "lora") when it has them; from the sizes alone."""
    shapes = parameter_shapes(config)
    name = meta.get("model_class", "GPT")
    if name != "GPT":
        if name not in HEADS:
            raise ValueError(f"unknown model_class {name!r}; known: GPT, {', '.join(HEADS)}")
        outputs = 1 if name == "GPTForMultipleChoice" else meta["head_options"]["num_labels"]
        shapes["score.weight"] = (int(outputs), config.n_embd)
        if (meta.get("head_options") or {}).get("score_bias", True):
            shapes["score.bias"] = (int(outputs),)
    if meta.get("lora") is not None:
        shapes = lora_parameter_shapes(shapes, LoraConfig.from_dict(meta["lora"]))
    if meta.get("bottleneck") is not None:
        shapes = bottleneck_parameter_shapes(shapes, BottleneckConfig.from_dict(
            meta["bottleneck"]))
    return shapes


def empty_model(config, dtype, model_class="GPT", head_options=None, lora=None,
                bottleneck=None):
    """The model `_expected_shapes` describes, its parameters uninitialised, to be filled
    from a file: `empty_gpt`, the task head on it, the LoRA adapters (a `LoraConfig` dict)
    or the bottleneck adapters (a `BottleneckConfig` dict)."""
    model = empty_gpt(config, dtype)
    if model_class != "GPT":
        from . import heads
        if model_class not in HEADS:
            raise ValueError(f"unknown model_class {model_class!r}")
        with skipping_init():
            model = getattr(heads, model_class).from_gpt(model, **(head_options or {}))
        model.to(dtype)
    if lora is not None:
        options = LoraConfig.from_dict(lora)
        with skipping_init():
            apply_lora(model, options.r, options.lora_alpha, options.lora_dropout,
                       options.target_modules)
        model.to(dtype)
    if bottleneck is not None:
        options = BottleneckConfig.from_dict(bottleneck)
        with skipping_init():
            apply_adapters(model, options.size, options.targets, options.trainable,
                           options.features)
        model.to(dtype)
    return model


def _some(names, limit=6):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
