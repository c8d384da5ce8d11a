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
from pathlib import Path

import numpy as np

from ..autograd import backend
from ..files import atomic_write_text
from ..nn.lora import LoraConfig, apply_lora, lora_layers
from . import safetensors
from .gpt import GPT

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."      # PeftModel -> LoraModel -> the wrapped model


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
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if not overwrite:
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            if (path / name).exists():
                raise FileExistsError(f"{path / name} already exists; pass overwrite=True to "
                                      f"replace the adapter saved in {path}")
    path.mkdir(parents=True, exist_ok=True)
    safetensors.save_file(tensors, path / WEIGHTS_NAME, metadata={"format": "pt"})
    # The config last: a folder that has one has its weights too.
    atomic_write_text(path / CONFIG_NAME,
                      json.dumps(adapter_config(config, base_model_name_or_path), indent=2) + "\n")


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
    return LoraConfig(int(d["r"]), float(d["lora_alpha"]), float(d.get("lora_dropout", 0.0)),
                      tuple(targets))


def load_adapter(model, path):
    """Load the adapter in folder `path` into `model` (a GPT), in place; returns the model.

    A model without adapters gets them first (`apply_lora` with the folder's settings);
    one that has them must have the same layers and ranks. Every tensor is checked
    (names, shapes) before any is copied, and all problems are named at once.
    """
    config = read_adapter_config(path)
    if not lora_layers(model):
        apply_lora(model, config.r, config.lora_alpha, config.lora_dropout,
                   config.target_modules)
    existing = model.__dict__.get("lora_config")
    if existing is not None and (existing.r, existing.lora_alpha) != (config.r,
                                                                      config.lora_alpha):
        raise ValueError(f"{path} holds an adapter of rank {config.r} and alpha "
                         f"{config.lora_alpha:g}; the model's adapters have rank {existing.r} "
                         f"and alpha {existing.lora_alpha:g}")
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    stored = safetensors.load_file(file)
    wanted = {}
    for name, layer in lora_layers(model):
        for part in ("lora_A", "lora_B"):
            wanted[f"{PREFIX}{name}.{part}.weight"] = getattr(layer, part).weight
    problems = [f"missing tensor {k!r}" for k in wanted if k not in stored]
    problems += [f"unexpected tensor {k!r}" for k in stored if k not in wanted]
    problems += [f"tensor {k!r} has shape {tuple(stored[k].shape)}, the model's is "
                 f"{tuple(p.shape)}" for k, p in wanted.items()
                 if k in stored and tuple(stored[k].shape) != tuple(p.shape)]
    if problems:
        raise ValueError(f"{file} does not fit the model's adapters (nothing was loaded):\n  "
                         + "\n  ".join(problems))
    for key, param in wanted.items():
        param.data[...] = backend.to_device(stored[key].astype(param.dtype), param.device)
    return model
