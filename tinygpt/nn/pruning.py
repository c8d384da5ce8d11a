"""Magnitude pruning: zero the smallest weights and keep them zero while training (floor 3).

`prune(model, sparsity, scope="global")` sets to zero the fraction `sparsity` of weights
with the smallest magnitudes |w|, and records which ones in a mask (True: kept):

- scope="global": one ranking over all the pruned matrices together (Han et al., 2015;
  PyTorch's `global_unstructured`), so layers with many small weights lose more of them;
- scope="layer": each matrix loses the same fraction of its own weights.

The count is exact: round(sparsity * n) weights (of n ranked together), as PyTorch's
pruning counts them. Ties are broken by position, deterministically: among equal
magnitudes the earlier weight goes first, in the order of `named_parameters()` and
row-major within a matrix (a stable sort). Weights pruned by an earlier call rank below
every other, so pruning again to a higher sparsity keeps them pruned; a lower sparsity
than already reached is refused (pruned weights are not brought back).

Which weights: by default the weight matrices of every `Linear`, the ones the blocks'
products use, and not biases, LayerNorms or embeddings (a Linear whose weight is an
Embedding's, like a GPT's tied head, is an embedding here), nor the adapters' own layers
(LoRA's A and B, the bottleneck adapters' down and up: their zero-initialised halves would
be pruned first and kept at zero). `parameters=` takes a list of
dotted names from `named_parameters()` to prune other tensors (e.g.
["transformer.wte.weight"]).

Kept at zero during training: each pruned Parameter gets a gradient hook that multiplies
its gradient by the mask. With a zero gradient AdamW's moments stay zero at those
positions, so its update lr * m / (sqrt(v) + eps) is exactly zero, and decoupled weight
decay (w -= lr * wd * w) keeps an exact zero at zero; gradient clipping scales zeros to
zeros. This holds for an optimizer made after pruning (or one whose moments are zero at
the pruned positions): moments carried over from before pruning would still move them.
Under float16 mixed precision the hook runs on the float16 model's gradients, which are
what the float32 master copy's gradients are made from, so the master weights stay zero
too.

Masks are not saved: a checkpoint holds the weights (zeros included) in tinygpt's format,
unchanged. After loading, `restore_masks(model)` recomputes each mask from the exact zeros
of the same parameters (a trained weight is exactly zero only where it was pruned), so a
loop resumed that way continues bit for bit. The trainer (`python -m tinygpt train`) knows
nothing of masks: prune and train through the Python API.

`sparsity(model)` is the fraction of exact zeros among the same weights.

Imports: autograd, validate, nn.module, nn.layers, nn.lora, nn.bottleneck.
"""


import numpy as np

from .. import validate
from ..autograd import backend
from .bottleneck import BottleneckAdapter
from .layers import Embedding, Linear
from .lora import LoRALinear
from .module import Module

SCOPES = ("global", "layer")


class _MaskHook:
    """A gradient hook: grad * mask (the mask an array of bools, so the dtype stays)."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, grad):
        return grad.data * self.mask


def check_sparsity(sparsity):
    """float(sparsity) for a number in [0, 1); else TypeError or ValueError."""
    return validate.real("sparsity (the fraction of weights set to zero)", sparsity,
                         minimum=0.0, maximum=1.0, high_open=True)


def _targets(model, parameters):
    """[(name, holders, param)]: the parameters to prune, each once, with every (module,
    attribute) that holds it."""
    if not isinstance(model, Module):
        raise TypeError(f"expected a Module, got {type(model).__name__}")
    holders = {}                   # id(param) -> [(module, attribute)]
    names = {}                     # id(param) -> first dotted name
    params = {}
    for module_name, module in model._all_named_modules():
        for attr, param in module._parameters.items():
            if param is None:
                continue
            holders.setdefault(id(param), []).append((module, attr))
            names.setdefault(id(param), f"{module_name}.{attr}" if module_name else attr)
            params[id(param)] = param
    if parameters is None:
        # Left out: tied embeddings, and the adapters' own layers (LoRA's A and B, the
        # bottleneck's down and up): B and up start at zero, so magnitude pruning would take
        # them first and the mask would keep them at zero for good.
        skipped = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
        for m in model.modules():
            if isinstance(m, LoRALinear):
                skipped |= {id(m.lora_A.weight), id(m.lora_B.weight)}
            elif isinstance(m, BottleneckAdapter):
                skipped |= {id(m.down.weight), id(m.up.weight)}
        chosen = []
        for module in model.modules():
            if isinstance(module, Linear) and id(module.weight) not in skipped \
                    and id(module.weight) not in [id(p) for p in chosen]:
                chosen.append(module.weight)
        keys = [id(p) for p in chosen]
    else:
        if isinstance(parameters, str):
            parameters = [parameters]
        by_name = dict(model.named_parameters())
        unknown = [n for n in parameters if n not in by_name]
        if unknown:
            raise ValueError(f"unknown parameter name(s) {unknown}; expected names from "
                             f"named_parameters(), e.g. {list(by_name)[:3]}")
        keys = []
        for n in parameters:
            if by_name[n].dtype.kind != "f":
                raise TypeError(f"{n} has dtype {by_name[n].dtype}: only floating point "
                                f"weights can be pruned")
            if id(by_name[n]) not in keys:
                keys.append(id(by_name[n]))
    if not keys:
        raise ValueError("nothing to prune: the model has no Linear weight (pass parameters=)")
    return [(names[k], holders[k], params[k]) for k in keys]


def _hook_of(holders):
    """The `_MaskHook` a module holding the parameter records for it, or None."""
    for module, attr in holders:
        masks = module.__dict__.get("_prune_masks")
        if masks and attr in masks:
            return masks[attr]
    return None


def _mask_of(holders):
    hook = _hook_of(holders)
    return None if hook is None else hook.mask


def _set_mask(holders, param, mask):
    """Record `mask` for `param` on every module holding it, hook its gradient once, and
    zero the pruned weights (and their gradient, if any)."""
    hook = _hook_of(holders)
    if hook is None:
        hook = _MaskHook(mask)
        if param.requires_grad:
            param.register_hook(hook)
    hook.mask = mask
    for module, attr in holders:
        if "_prune_masks" not in module.__dict__:
            object.__setattr__(module, "_prune_masks", {})
        module._prune_masks[attr] = hook
    xp = backend.array_module(param.data)
    param.data[...] = xp.where(mask, param.data, 0)
    if param.grad is not None:
        param.grad.data[...] = xp.where(mask, param.grad.data, 0)


def prune(model, sparsity, scope="global", parameters=None):
    """Zero the `sparsity` fraction of smallest-magnitude weights of `model` (see the
    module docstring), in place; returns {name: mask} (bool arrays, True where kept).

    >>> masks = prune(model, 0.5)                    # half of the Linear weights
    >>> round(sparsity(model), 3)
    0.5
    """
    sparsity_ = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    targets = _targets(model, parameters)
    scores = []
    for name, holders, param in targets:
        # Ranked on the host (a one-off): NumPy's stable sort breaks ties by position.
        host = backend.to_numpy(param.data)
        score = np.abs(host).astype(np.float64).reshape(-1)  # numpy: host data
        old = _mask_of(holders)
        if old is not None:
            score[~backend.to_numpy(old).reshape(-1)] = -1.0      # pruned before: first
        scores.append(score)
    groups = [list(range(len(targets)))] if scope == "global" else \
        [[i] for i in range(len(targets))]
    keep = [None] * len(targets)
    for group in groups:
        flat = np.concatenate([scores[i] for i in group])  # numpy: host data
        k = round(sparsity_ * flat.size)
        already = int((flat < 0).sum())
        if k < already:
            raise ValueError(f"cannot prune to sparsity {sparsity_}: {already} of {flat.size} "
                             f"weights ({already / flat.size:.4f}) are pruned already, and "
                             f"pruned weights are not restored")
        kept = np.ones(flat.size, dtype=bool)  # numpy: host data
        kept[np.argsort(flat, kind="stable")[:k]] = False  # numpy: host data
        start = 0
        for i in group:
            n = scores[i].size
            keep[i] = kept[start:start + n]
            start += n
    made = {}
    for (name, holders, param), kept in zip(targets, keep):
        mask = backend.to_device(kept.reshape(param.shape), param.device)
        _set_mask(holders, param, mask)
        made[name] = mask
    return made


def restore_masks(model, parameters=None):
    """Recompute the masks of the parameters `prune` would take (default: the Linear
    weights; or the names given) from their exact zeros, e.g. after loading a checkpoint of
    a pruned model; returns {name: mask}. Pruned weights then stay zero in training again."""
    made = {}
    for name, holders, param in _targets(model, parameters):
        mask = param.data != 0
        _set_mask(holders, param, mask)
        made[name] = mask
    return made


def pruning_masks(model):
    """{name: mask} of every pruned parameter of `model` (each once)."""
    out, seen = {}, set()
    for module_name, module in model._all_named_modules():
        for attr, hook in (module.__dict__.get("_prune_masks") or {}).items():
            if id(hook) not in seen:
                seen.add(id(hook))
                out[f"{module_name}.{attr}" if module_name else attr] = hook.mask
    return out


def sparsity(model, parameters=None, by_parameter=False):
    """The fraction of exact zeros among the weights `prune` would take (default: every
    Linear weight; or the names given). by_parameter=True: {name: fraction} instead."""
    counts = {}
    for name, _, param in _targets(model, parameters):
        zeros = int(backend.to_numpy((param.data == 0).sum()))
        counts[name] = (zeros, param.data.size)
    if by_parameter:
        return {name: zeros / size for name, (zeros, size) in counts.items()}
    return sum(z for z, _ in counts.values()) / sum(n for _, n in counts.values())
