"""LoRA: low-rank adapters on Linear layers, for fine-tuning few parameters (floor 3).

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models": a pre-trained
weight W (out, in) stays frozen, and each adapted layer learns a low-rank change to it,

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A (r, in), B (out, r), r << in

B starts at zero, so the adapted model starts out equal to the base model; A starts as
PEFT's does (`kaiming_uniform_(a=sqrt(5))`, which is U(-1/sqrt(in), 1/sqrt(in)), the
default initialisation of a Linear). Only A and B are trained: 2 * r * (in + out) numbers
per layer instead of in * out. Afterwards the change can be folded into the weight,

    W' = W + (alpha / r) * B A,

and the model is a plain one again, as fast as before (`merge_lora`).

`apply_lora(model, rank, alpha, dropout, targets)` replaces every Linear whose name ends in
one of `targets` (PEFT's rule: the whole name or its last dotted parts) by a `LoRALinear`
holding the original as `base_layer`, the names PEFT gives them in memory
(`transformer.h.0.attn.c_attn.base_layer.weight`, `...c_attn.lora_A.weight`), and freezes
every other parameter of the model (requires_grad False: no gradient is computed for them,
and `configure_param_groups` leaves them out of the optimizer). Saving and loading the
adapters alone, in PEFT's file layout, is `tinygpt.model.adapters`.

Imports: numpy, autograd, validate, nn, memory.
"""

from dataclasses import dataclass

import numpy as np

from .. import memory, validate
from . import init
from .layers import Dropout, Linear
from .module import Module, name_matches

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")     # every projection of a GPT-2 block
# The largest scaling alpha / r: float16's largest number, so that the scale is finite in
# every dtype tinygpt trains in (a larger one turns the first forward's activations to inf).
MAX_SCALING = 65504.0


@dataclass(frozen=True)
class LoraConfig:
    """The settings of a model's adapters (PEFT's names: r, lora_alpha, lora_dropout,
    target_modules)."""

    r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple

    @property
    def scaling(self):
        return self.lora_alpha / self.r

    def to_dict(self):
        """The settings as JSON types (saved in checkpoints)."""
        return {"r": self.r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": list(self.target_modules)}

    @classmethod
    def from_dict(cls, d):
        """The inverse of `to_dict`, every setting checked."""
        config = cls(d["r"], d["lora_alpha"], d["lora_dropout"], tuple(d["target_modules"]))
        check_lora_options(config.r, config.lora_alpha, config.lora_dropout,
                           config.target_modules)
        return config


class LoRALinear(Module):
    """A frozen Linear plus a trainable low-rank update (see the module docstring).

    x (..., in) -> y (..., out) = base_layer(x) + scaling * lora_B(lora_A(lora_dropout(x)))
    """

    def __init__(self, base_layer, rank, alpha, dropout=0.0):
        super().__init__()
        if not isinstance(base_layer, Linear):
            raise TypeError(f"LoRALinear wraps a Linear, got {type(base_layer).__name__}")
        check_lora_options(rank, alpha, dropout)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.rank, self.alpha, self.scaling = int(rank), float(alpha), alpha / rank
        weight = base_layer.weight
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_dropout = Dropout(dropout)
        self.lora_A = Linear(self.in_features, rank, bias=False, device=weight.device,
                             dtype=weight.dtype)                  # U(-1/sqrt(in), 1/sqrt(in))
        self.lora_B = Linear(rank, self.out_features, bias=False, device=weight.device,
                             dtype=weight.dtype)
        init.zeros_(self.lora_B.weight)                           # starts equal to the base

    @property
    def weight(self):
        """The frozen base weight (out, in), as on the Linear this layer wraps."""
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    def forward(self, x):
        # The scale is applied to the (..., r) activations: r numbers per row, not out.
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x)) * self.scaling)

    def delta_weight(self):
        """The change the adapter makes to the weight, scaling * B A (out, in), an array."""
        return self.scaling * (self.lora_B.weight.data @ self.lora_A.weight.data)

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha:g}"


def check_lora_options(rank, alpha, dropout, targets=None):
    """Raise an error naming the first bad LoRA setting (see `apply_lora`)."""
    validate.positive_integer("LoRA rank", rank)
    validate.real("LoRA alpha", alpha, minimum=0, low_open=True)
    if alpha / rank > MAX_SCALING:
        raise ValueError(f"LoRA alpha {alpha!r} with rank {rank} scales the adapters by "
                         f"alpha / rank = {alpha / rank:.4g}, more than {MAX_SCALING:g} (float16's "
                         f"largest number); LoRA's alpha is usually about the rank")
    validate.probability("LoRA dropout", dropout, include_one=False)
    if targets is not None:
        validate.names("LoRA targets", targets, DEFAULT_TARGETS)


def apply_lora(model, rank=8, alpha=16, dropout=0.0, targets=DEFAULT_TARGETS):
    """Wrap the Linear layers of `model` named by `targets` in `LoRALinear`s and freeze
    everything else, in place; returns the model.

    rank:    r, the rank of the update (> 0)
    alpha:   the update is scaled by alpha / r (PEFT's lora_alpha)
    dropout: dropout on the adapters' input (training mode only)
    targets: layer names; a layer is adapted when its dotted name is a target or ends in
             "." + a target ("c_proj" adapts attn.c_proj and mlp.c_proj). Every target
             must name at least one Linear; the tied output head cannot be adapted.

    >>> apply_lora(model, rank=8, alpha=16, targets=("c_attn",))
    >>> model.num_parameters(only_trainable=True)     # 2 * 8 * (C + 3C) per block
    """
    targets = targets if isinstance(targets, str) else tuple(targets)
    check_lora_options(rank, alpha, dropout, targets)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters; merge_lora(model) folds them "
                         "in first")
    modules = dict(model.named_modules())
    chosen = lora_targets(model, targets)
    check_adapters_fit(model, [modules[name] for name in chosen], rank)
    model.requires_grad_(False)
    for name in chosen:
        parent, _, child = name.rpartition(".")
        owner = modules[parent] if parent else model
        base = modules[name]
        setattr(owner, child, LoRALinear(base, rank, alpha, dropout).train(base.training))
    model.lora_config = LoraConfig(int(rank), float(alpha), float(dropout), targets)
    return model


def lora_targets(model, targets):
    """The dotted names of the Linear layers of `model` that `apply_lora(..., targets)`
    adapts, in order; raises the errors apply_lora raises for a bad target. Changes
    nothing."""
    modules = dict(model.named_modules())
    chosen = []
    for target in targets:
        named = [name for name in modules if name and name_matches(name, target)]
        if not named:
            linear = sorted({name.rsplit(".", 1)[-1] for name, m in modules.items()
                             if isinstance(m, Linear)})
            raise ValueError(f"LoRA target {target!r} names no layer of the model; its Linear "
                             f"layers are named {', '.join(linear)}")
        for name in named:
            module = modules[name]
            if not isinstance(module, Linear):
                raise ValueError(f"LoRA target {target!r} names {name!r}, a "
                                 f"{type(module).__name__}; LoRA adapts Linear layers only")
            if _tied(model, module):
                raise ValueError(f"LoRA target {target!r} names {name!r}, whose weight is tied "
                                 f"to another layer's (the token embedding); adapting it would "
                                 f"untie them")
            if name not in chosen:
                chosen.append(name)
    return chosen


def check_adapters_fit(model, linears, rank):
    """Raise ValueError when the model's parameters plus adapters of `rank` on `linears`
    need more memory than this machine has, from the sizes alone (before allocating)."""
    adapter = sum(rank * (m.in_features + m.out_features) * m.weight.data.itemsize
                  for m in linears)
    present = sum(p.data.nbytes for p in model.parameters())
    memory.check_fits(adapter + present, f"LoRA adapters of rank {rank} on {len(linears)} "
                                         f"layer(s) ({memory.format_bytes(adapter)}) beside the "
                                         f"model's parameters")


def lora_parameter_shapes(shapes, config, tied=("lm_head",)):
    """The {state_dict key: shape} of a model of parameter `shapes` once `apply_lora` has
    adapted it with `config` (a LoraConfig): each targeted Linear's weight and bias move
    under `base_layer`, beside lora_A (r, in) and lora_B (out, r). `tied` names the layers
    whose weight is tied (never adapted). From the sizes alone, as checkpoints are checked."""
    out = {}
    for key, shape in shapes.items():
        layer, _, kind = key.rpartition(".")
        adapted = (layer not in tied and kind in ("weight", "bias") and f"{layer}.weight" in shapes
                   and len(shapes[f"{layer}.weight"]) == 2
                   and any(name_matches(layer, t) for t in config.target_modules))
        if not adapted:
            out[key] = shape
            continue
        out[f"{layer}.base_layer.{kind}"] = shape
        if kind == "weight":
            rows, columns = shape
            out[f"{layer}.lora_A.weight"] = (config.r, columns)
            out[f"{layer}.lora_B.weight"] = (rows, config.r)
    return out


def _tied(model, linear):
    """True when `linear`'s weight is also a parameter of another module of `model`."""
    owners = [m for m in model.modules()
              if any(p is linear.weight for p in m._parameters.values())]
    return len(owners) > 1


def lora_layers(model):
    """[(dotted name, LoRALinear)] of `model`, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Fold every adapter into its base weight (W += scaling * B A) and put the plain
    Linear back in its place, in place; returns the model, which then holds no LoRA
    layer and computes what the adapted one did. Every parameter is trainable again,
    as in a freshly built model."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to merge (apply_lora adds them)")
    modules = dict(model.named_modules())
    for name, layer in layers:
        layer.base_layer.weight.data += layer.delta_weight()
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, layer.base_layer)
    model.requires_grad_(True)
    model.__dict__.pop("lora_config", None)
    return model


def merged_state(model):
    """{state_dict key of the merged model: backend array}: the model's parameters as
    `merge_lora` would leave them, without changing the model. Each adapted layer's
    weight is a float32 copy, W + scaling * B A; every other array is the parameter's own."""
    layers = dict(lora_layers(model))
    out = {}
    for key, param in model.state_dict().items():
        layer, _, kind = key.rpartition(".")
        owner, _, part = layer.rpartition(".")
        if owner not in layers:
            out[key] = param.data
        elif part == "base_layer":
            data = param.data
            if kind == "weight":
                adapter = layers[owner]
                A, B = (getattr(adapter, p).weight.data.astype(np.float32) for p in
                        ("lora_A", "lora_B"))
                data = data.astype(np.float32) + np.float32(adapter.scaling) * (B @ A)
            out[f"{owner}.{kind}"] = data
    return out
