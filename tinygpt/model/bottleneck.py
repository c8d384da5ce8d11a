"""Bottleneck adapters saved and loaded alone, without the base model (floor 5).

A model adapted with `tinygpt.nn.bottleneck.apply_adapters` trains its bottleneck
adapters (and the modules named `trainable`, such as a task head's `score`) and nothing
else, so a folder with just those tensors and the adapters' settings is enough to
rebuild the fine-tuned model from the base:

    bottleneck_config.json          {"method": "bottleneck", "size": 16,
                                     "targets": ["attn", "mlp"], "features": 128,
                                     "trainable": ["score"], "model_class": "GPT", ...}
    bottleneck_model.safetensors    transformer.h.0.attn.bottleneck.down.weight (m, C),
                                    ...down.bias, ...up.weight (C, m), ...up.bias, per
                                    adapted module; then every parameter of the trainable
                                    modules (score.weight, ...); in the model's dtype

The names are the model's own state_dict keys. No other library reads this layout (PEFT's
LoRA folders are `tinygpt.model.adapters`; PEFT has no Houlsby adapter for GPT-2).

    >>> save_bottleneck(model, "out/bottleneck")
    >>> load_bottleneck(base, "out/bottleneck")     # adapters applied, tensors copied

Imports: the standard library, numpy, files, nn (bottleneck adapters), model (safetensors).
"""

import json
from pathlib import Path

import numpy as np

from .. import memory
from ..autograd import backend
from ..files import read_json
from ..nn.bottleneck import (BottleneckConfig, apply_adapters, bottleneck_adapters,
                              bottleneck_parameter_shapes, remove_adapters)
from . import safetensors

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "bottleneck_model.safetensors"
METHOD = "bottleneck"


def bottleneck_state_dict(model):
    """{state_dict key: the parameter} of what `save_bottleneck` writes: every adapter's
    parameters, then those of the modules the config keeps trainable."""
    config = model.__dict__.get("bottleneck_config")
    if config is None or not bottleneck_adapters(model):
        raise ValueError("the model has no bottleneck adapters (apply_adapters adds them)")
    state = model.state_dict()
    chosen = {}
    for name, _ in bottleneck_adapters(model):
        chosen.update({k: v for k, v in state.items() if k.startswith(name + ".")})
    modules = [name for name, _ in model.named_modules() if name and any(
        name == t or name.endswith("." + t) for t in config.trainable)]
    for name in modules:
        chosen.update({k: v for k, v in state.items() if k.startswith(name + ".")})
    return chosen


def save_bottleneck(model, path, overwrite=False):
    """Write the bottleneck adapters of `model` (and its trainable modules) into the folder
    `path` (see the module docstring). An existing file of these names raises
    FileExistsError before anything is written, unless overwrite=True."""
    tensors = {k: backend.to_numpy(v.data) for k, v in bottleneck_state_dict(model).items()}
    config = model.bottleneck_config
    text = json.dumps({"method": METHOD, **config.to_dict()}, indent=2) + "\n"
    safetensors.save_folder(path, tensors, WEIGHTS_NAME, {CONFIG_NAME: text}, CONFIG_NAME,
                            overwrite, "the bottleneck adapters", metadata={"format": "tinygpt"})


def read_bottleneck_config(path):
    """The BottleneckConfig of a folder `save_bottleneck` wrote (ValueError if it is not
    one, naming what is wrong)."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: not a bottleneck adapter folder "
                                f"(LoRA folders hold adapter_config.json: load_adapter)")
    d = read_json(file)
    if not isinstance(d, dict) or d.get("method") != METHOD:
        found = d.get("method") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{file}: method is {found!r}, expected {METHOD!r}")
    try:
        return BottleneckConfig.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{file}: not a usable bottleneck config ({type(e).__name__}: {e})") \
            from None


def load_bottleneck(model, path):
    """Load the bottleneck adapters in folder `path` into `model`, in place; returns the
    model. A model without adapters gets them first (`apply_adapters` with the folder's
    settings); one that has them must have the same structure. Every tensor is checked
    (names, shapes) before any is copied, and all problems are named at once; a model the
    folder does not fit is left as it was."""
    config = read_bottleneck_config(path)
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    existing = model.__dict__.get("bottleneck_config")
    if existing is not None and existing != config:
        raise ValueError(f"{path} holds bottleneck adapters {config.to_dict()}; the model's are "
                         f"{existing.to_dict()}")
    added = existing is None
    # From the sizes alone, before anything is read or allocated: the file's tensors
    # against the adapted model's shapes, and the new adapters and the file in memory.
    shapes = {k: tuple(p.shape) for k, p in model.state_dict().items()}
    expected = bottleneck_parameter_shapes(shapes, config) if added else shapes
    with open(file, "rb") as f:
        entries, _, _ = safetensors.read_index(f, file)
    problems = [f"unexpected tensor {k!r}" for k in entries if k not in expected]
    problems += [f"tensor {k!r} has shape {tuple(e.shape)}, the model's is {expected[k]}"
                 for k, e in entries.items() if k in expected and tuple(e.shape) != expected[k]]
    if problems:
        raise ValueError(f"{file} does not fit the model's bottleneck adapters (nothing was "
                         f"loaded):\n  " + "\n  ".join(problems))
    itemsize = next(model.parameters()).data.itemsize
    new = sum(int(np.prod(s)) for k, s in expected.items() if k not in shapes) * itemsize
    memory.check_fits(new + sum(e.end - e.begin for e in entries.values()),
                      f"the bottleneck adapters of {path} and their file")
    stored = safetensors.load_file(file)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    if added:
        apply_adapters(model, config.size, config.targets, config.trainable, config.features)
    wanted = bottleneck_state_dict(model)
    problems = [f"missing tensor {k!r}" for k in wanted if k not in stored]
    problems += [f"unexpected tensor {k!r}" for k in stored if k not in wanted]
    if problems:
        if added:
            remove_adapters(model)
            for p, flag in flags:
                p.requires_grad = flag
        raise ValueError(f"{file} does not fit the model's bottleneck adapters (nothing was "
                         f"loaded):\n  " + "\n  ".join(problems))
    for key, param in wanted.items():
        array = np.asarray(stored[key]).astype(param.dtype, copy=False)
        param.data[...] = backend.to_device(array, param.device)
    return model

