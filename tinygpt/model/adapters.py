"""LoRA adapters saved and loaded alone, in PEFT's file layout (floor 5).

A folder written by `save_adapter` is what Hugging Face PEFT's `PeftModel.save_pretrained`
writes for a LoRA on `GPT2LMHeadModel`, so `PeftModel.from_pretrained(gpt2, folder)` reads
it, and `load_adapter` reads PEFT's:

    adapter_config.json          {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8,
                                  "lora_alpha": 16, "lora_dropout": 0.0,
                                  "target_modules": ["c_attn", ...], "fan_in_fan_out": true,
                                  "bias": "none", ...}
    adapter_model.safetensors    base_model.model.transformer.h.0.attn.c_attn.lora_A.weight
                                 (r, in), ...lora_B.weight (out, r), float32, per adapted layer

The module paths are the GPT's own (`transformer.h.{i}.attn.c_attn`, `.attn.c_proj`,
`.mlp.c_fc`, `.mlp.c_proj`), which are also Hugging Face GPT-2's. Hugging Face's GPT-2
stores these four layers as `Conv1D`, whose weight is (in, out), the transpose of a Linear's;
PEFT keeps lora_A and lora_B in Linear's layout all the same (it sets `fan_in_fan_out` and
transposes only the merged product B A), so the tensors are saved as they are, with
`fan_in_fan_out: true` in the config as PEFT writes it for GPT-2.

Imports: the standard library, numpy, nn (LoRA), model (GPT, safetensors).
"""

import json
import math
from pathlib import Path

import numpy as np

from ..autograd import backend
from ..nn.lora import (LoraConfig, apply_lora, check_adapters_fit, check_lora_options,
                       lora_layers, lora_targets)
from . import safetensors
from .gpt import GPT

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."      # PeftModel -> LoraModel -> the wrapped model
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def adapter_state_dict(model):
    """{PEFT tensor name: float32 NumPy array} of the model's adapters."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters (apply_lora adds them)")
    out = {}
    for name, layer in layers:
        for part in ("lora_A", "lora_B"):
            array = backend.to_numpy(getattr(layer, part).weight.data)
            out[f"{PREFIX}{name}.{part}.weight"] = array.astype(np.float32, copy=False)
    return out


def adapter_config(config, base_model_name_or_path=None):
    """The adapter_config.json dict of a LoraConfig, with PEFT's field names."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path, "revision": None,
        "r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": list(config.target_modules), "fan_in_fan_out": True,
        "bias": "none", "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": False, "use_dora": False,
    }


def save_adapter(model, path, overwrite=False, base_model_name_or_path=None):
    """Write the adapters of a LoRA-adapted GPT (see `apply_lora`) into the folder `path`:
    adapter_config.json and adapter_model.safetensors, PEFT's layout (module docstring).

    An existing file of these names raises FileExistsError before anything is written,
    unless overwrite=True.
    """
    if type(model) is not GPT:
        raise TypeError(f"save_adapter writes a language model's adapters (PEFT's CAUSAL_LM); "
                        f"got a {type(model).__name__}")
    config = model.__dict__.get("lora_config")
    tensors = adapter_state_dict(model)
    text = json.dumps(adapter_config(config, base_model_name_or_path), indent=2) + "\n"
    safetensors.save_folder(path, tensors, WEIGHTS_NAME, {CONFIG_NAME: text}, CONFIG_NAME,
                            overwrite, "the adapter", metadata={"format": "pt"})


def read_adapter_config(path):
    """The LoraConfig of an adapter folder; settings tinygpt cannot reproduce (another
    PEFT method, DoRA, rsLoRA, per-layer ranks, trained biases) raise ValueError."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: not a PEFT adapter folder")
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("peft_type") != "LORA":
        found = d.get("peft_type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{file}: peft_type is {found!r}; tinygpt reads LoRA adapters only")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in d]
    if missing:
        raise ValueError(f"{file}: missing field(s) {', '.join(missing)}")
    unsupported = [(k, d[k]) for k, plain in (
        ("use_dora", False), ("use_rslora", False), ("rank_pattern", {}), ("alpha_pattern", {}),
        ("bias", "none"), ("layers_to_transform", None), ("modules_to_save", None))
        if d.get(k, plain) not in (plain, None)]
    if unsupported:
        k, value = unsupported[0]
        raise ValueError(f"{file}: {k} is {value!r}, which tinygpt's LoRA does not support")
    targets = d["target_modules"]
    if isinstance(targets, str):
        raise ValueError(f"{file}: target_modules is the pattern {targets!r}; tinygpt reads a "
                         f"list of layer names")
    return _lora_config(d, targets, file)


def _lora_config(d, targets, file):
    """The LoraConfig of adapter_config.json's dict `d`, every value checked (JSON allows
    Infinity, NaN, true and 8.9 where a rank or a scale belongs); errors name `file`."""
    r = d["r"]
    if isinstance(r, bool) or not (isinstance(r, int) or isinstance(r, float) and r.is_integer()) \
            or r < 1:
        raise ValueError(f"{file}: r must be a positive int (the adapters' rank), got {r!r}")
    alpha = d["lora_alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not 0 < alpha < math.inf:
        raise ValueError(f"{file}: lora_alpha must be a finite number > 0, got {alpha!r}")
    dropout = d.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        raise ValueError(f"{file}: lora_dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(targets, list) or not targets \
            or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"{file}: target_modules must be a list of layer names such as "
                         f"[\"c_attn\"], got {targets!r}")
    try:
        check_lora_options(int(r), float(alpha), float(dropout), tuple(targets))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file}: lora_alpha / r: {e}") from None
    return LoraConfig(int(r), float(alpha), float(dropout), tuple(targets))


def load_adapter(model, path):
    """Load the adapter in folder `path` into `model` (a GPT), in place; returns the model.

    A model without adapters gets them (`apply_lora` with the folder's settings); one that
    has them must have the same layers and ranks. Everything is checked before the model
    is touched: the settings, the adapters' size against memory (from the sizes alone),
    the file's tensor names, shapes and dtypes (from its header, before any tensor is
    read), then the values (finite). All problems are named at once, and a load that
    fails leaves the model exactly as it was.
    """
    config = read_adapter_config(path)
    file = Path(path) / WEIGHTS_NAME
    existing = model.__dict__.get("lora_config")
    adapted = lora_layers(model)
    if adapted and existing is not None and (existing.r, existing.lora_alpha) != (
            config.r, config.lora_alpha):
        raise ValueError(f"{path} holds an adapter of rank {config.r} and alpha "
                         f"{config.lora_alpha:g}; the model's adapters have rank {existing.r} "
                         f"and alpha {existing.lora_alpha:g}")
    if adapted:
        shapes = {name: (layer.in_features, layer.out_features, layer.rank)
                  for name, layer in adapted}
    else:                                   # the layers apply_lora will adapt, unchanged yet
        modules = dict(model.named_modules())
        names = lora_targets(model, config.target_modules)
        check_adapters_fit(model, [modules[n] for n in names], config.r)
        shapes = {n: (modules[n].in_features, modules[n].out_features, config.r)
                  for n in names}
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    wanted = {}
    for name, (fan_in, fan_out, rank) in shapes.items():
        wanted[f"{PREFIX}{name}.lora_A.weight"] = (rank, fan_in)
        wanted[f"{PREFIX}{name}.lora_B.weight"] = (fan_out, rank)
    with open(file, "rb") as f:
        entries, _, _ = safetensors.read_index(f, file)
    problems = [f"missing tensor {k!r}" for k in wanted if k not in entries]
    problems += [f"unexpected tensor {k!r}" for k in entries if k not in wanted]
    problems += [f"tensor {k!r} has shape {entries[k].shape}, the model's is {shape}"
                 for k, shape in wanted.items() if k in entries and entries[k].shape != shape]
    problems += [f"tensor {k!r} has dtype {entries[k].dtype}; expected a float dtype (F32, "
                 f"F16, BF16 or F64)" for k in wanted
                 if k in entries and entries[k].dtype not in FLOAT_DTYPES]
    if not problems:                        # the sizes are the model's: reading is safe
        stored = safetensors.load_file(file)
        problems = [f"tensor {k!r} holds values that are not finite (NaN or inf)"
                    for k in wanted if not np.isfinite(stored[k]).all()]
    if problems:
        raise ValueError(f"{file} does not fit the model's adapters (nothing was loaded):\n  "
                         + "\n  ".join(problems))
    undo = None if adapted else _undo_record(model)
    try:
        if not adapted:
            apply_lora(model, config.r, config.lora_alpha, config.lora_dropout,
                       config.target_modules)
        params = {f"{PREFIX}{name}.{part}.weight": getattr(layer, part).weight
                  for name, layer in lora_layers(model) for part in ("lora_A", "lora_B")}
        values = {key: backend.to_device(stored[key].astype(param.dtype), param.device)
                  for key, param in params.items()}
        for key, param in params.items():
            param.data[...] = values[key]
    except BaseException:
        if undo is not None:
            _undo_lora(model, undo)
        raise
    return model


def _undo_record(model):
    """What apply_lora changes besides the layers it wraps: each parameter's requires_grad."""
    return [(p, p.requires_grad) for p in model.parameters()]


def _undo_lora(model, record):
    """Undo apply_lora: the wrapped Linear layers back in place, requires_grad restored."""
    modules = dict(model.named_modules())
    for name, layer in lora_layers(model):
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, layer.base_layer)
    for param, requires_grad in record:
        param.requires_grad = requires_grad
    model.__dict__.pop("lora_config", None)
