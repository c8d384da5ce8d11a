"""Bottleneck adapters: small trainable layers inside a frozen model (floor 3).

Houlsby et al. (2019), "Parameter-Efficient Transfer Learning for NLP": each sublayer of
a transformer block (attention, then the MLP) is followed by a bottleneck adapter, placed
before the sublayer's output is added to the residual stream,

    h = sublayer(x)                                  (B, T, C), after its output projection
    h' = h + W_up gelu(W_down h + b_down) + b_up     W_down (m, C), W_up (C, m), m << C
    x = x + h'                                       the block's residual add, unchanged

and only the adapters (and a task head) are trained. W_up and b_up start at zero, so
the adapted model starts out computing exactly what the base computes; W_down starts
as the GPT's Linear layers do, N(0, 0.02), b_down at zero. An adapter has
2 C m + m + C parameters. Unlike LoRA's update, an adapter is a nonlinear function of
h: it cannot be folded into a weight, and the adapted model stays slower than the base
(two small products per sublayer).

"Bottleneck adapter" names these layers throughout, so that "adapter" alone never
stands for them: `tinygpt.model.adapters` is about LoRA adapter files (PEFT's layout).

`apply_adapters(model, size)` gives each module named by `targets` (GPT: every block's
`attn` and `mlp`) a child `bottleneck`, a `BottleneckAdapter`, run on the module's
output by a forward hook: the base's own modules and parameter names are untouched
(`transformer.h.0.attn.c_attn.weight`), and the adapters' are beside them
(`transformer.h.0.attn.bottleneck.down.weight`, `.up.weight`, ...). Every other
parameter is frozen (requires_grad False) except those of the modules named in
`trainable`, such as a task head's `score`. Refused, with an error saying why:

- a size that is not a positive int;
- adapters on a model that has them already (a second set would stack on the first);
- a model with LoRA layers: the two methods are used one at a time here (a LoRA model
  freezes everything but its own A and B; merging it first, `merge_lora`, gives a
  plain model that takes adapters);
- a target or a `trainable` module holding a tied parameter: the GPT's output head
  `lm_head` is the token embedding `wte` (one Parameter), so training or adapting
  "the head" would change the frozen base's embedding as well.

Saving and loading the adapters alone is `tinygpt.model.bottleneck`; checkpoints keep
their structure (`BottleneckConfig`) and rebuild them.

Imports: autograd, nn, validate.
"""

from dataclasses import dataclass

from .. import validate
from . import init
from .layers import GELU, Linear
from .lora import lora_layers
from .module import Module, name_matches

DEFAULT_TARGETS = ("attn", "mlp")       # Houlsby's two places in each GPT block
ATTRIBUTE = "bottleneck"                 # the child each adapted module gets


@dataclass(frozen=True)
class BottleneckConfig:
    """The structure of a model's bottleneck adapters: width `size` (m), the adapted
    modules' names `targets`, their output width `features` (C), and the modules left
    trainable beside the adapters (`trainable`, e.g. ("score",))."""

    size: int
    targets: tuple
    features: int
    trainable: tuple = ()

    def to_dict(self):
        """The settings as JSON types (saved in checkpoints and adapter folders)."""
        return {"size": self.size, "targets": list(self.targets), "features": self.features,
                "trainable": list(self.trainable)}

    @classmethod
    def from_dict(cls, d):
        """The inverse of `to_dict`, every setting checked."""
        if not isinstance(d, dict):
            raise TypeError(f"a bottleneck config must be a dict, got {type(d).__name__}")
        config = cls(d["size"], tuple(d["targets"]), d["features"],
                     tuple(d.get("trainable", ())))
        check_bottleneck_options(config.size, config.targets, config.trainable)
        validate.positive_integer("bottleneck features", config.features)
        return config


class BottleneckAdapter(Module):
    """h (..., features) -> h + up(gelu(down(h))), the up projection zero at the start.

    >>> adapter = BottleneckAdapter(features=128, size=16)
    >>> adapter.num_parameters()            # 2 * 128 * 16 + 16 + 128
    4240
    """

    def __init__(self, features, size, device=None, dtype=None):
        super().__init__()
        validate.positive_integer("bottleneck features", features)
        validate.positive_integer("bottleneck size", size)
        self.features, self.size = int(features), int(size)
        self.down = Linear(features, size, device=device, dtype=dtype)
        self.gelu = GELU()
        self.up = Linear(size, features, device=device, dtype=dtype)
        init.normal_(self.down.weight, 0.0, 0.02)        # as the GPT's Linear layers
        init.zeros_(self.down.bias)
        init.zeros_(self.up.weight)                        # starts as the identity
        init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(self.gelu(self.down(h)))

    def extra_repr(self):
        return f"features={self.features}, size={self.size}"


def check_bottleneck_options(size, targets=DEFAULT_TARGETS, trainable=()):
    """Raise an error naming the first bad bottleneck-adapter setting."""
    validate.positive_integer("bottleneck size", size)
    validate.names("bottleneck targets", targets, DEFAULT_TARGETS)
    validate.names("bottleneck trainable", trainable, ("score",), empty_ok=True)


def _adapter_output(module, inputs, output):
    """The forward hook of an adapted module: its output through its adapter. A
    module-level function, looked up by attribute: a deep copy of the model (mixed
    precision's master copy) runs its own adapters."""
    return getattr(module, ATTRIBUTE)(output)


def _tied_names(model):
    """{id of a Parameter held by two or more modules}: tied parameters."""
    owners = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(id(m))
    return {key for key, ms in owners.items() if len(ms) > 1}


def _named(modules, names, what):
    """[(name, module)] of `modules` matched by each of `names`; a name matching nothing
    is a ValueError listing what the model's modules are called."""
    out = []
    for target in names:
        found = [(n, m) for n, m in modules.items() if n and name_matches(n, target)]
        if not found:
            known = sorted({n.rsplit(".", 1)[-1] for n in modules if n})
            raise ValueError(f"bottleneck {what} {target!r} names no module of the model; its "
                             f"modules are named {', '.join(known)}")
        out += [(n, m) for n, m in found if n not in dict(out)]
    return out


def apply_adapters(model, size, targets=DEFAULT_TARGETS, trainable=(), features=None):
    """Give each module of `model` named by `targets` a bottleneck adapter of width `size`
    on its output, and freeze every parameter but the adapters' and those of the modules
    named in `trainable`; in place, returns the model.

    size:      m, the adapter's inner width (> 0)
    targets:   module names; a module is adapted when its dotted name is a target or ends
               in "." + a target ("attn" adapts transformer.h.{i}.attn)
    trainable: module names whose parameters stay trainable (a task head's "score")
    features:  the adapted modules' output width; default model.config.n_embd

    >>> apply_adapters(model, size=16)            # GPT: 2 adapters a block
    >>> model.num_parameters(only_trainable=True)  # n_layer * 2 * (2 * C * 16 + 16 + C)
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    trainable = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    check_bottleneck_options(size, targets, trainable)
    if bottleneck_adapters(model):
        raise ValueError("the model already has bottleneck adapters; a second set would run "
                         "after the first (load saved ones with load_bottleneck instead)")
    if lora_layers(model):
        raise ValueError("the model has LoRA layers: LoRA and bottleneck adapters are not "
                         "used together; merge_lora(model) first gives a plain model")
    width = getattr(getattr(model, "config", None), "n_embd", None)
    if features is None:
        if width is None:
            raise ValueError("apply_adapters: give features= (the adapted modules' output "
                             "width); the model has no config.n_embd")
        features = width
    validate.positive_integer("bottleneck features", features)
    if width is not None and features != width:
        raise ValueError(f"bottleneck features {features} must be the model's width: its "
                         f"sublayers output n_embd = {width} channels")
    modules = dict(model.named_modules())
    tied = _tied_names(model)
    adapted = _named(modules, targets, "target")
    kept = _named(modules, trainable, "trainable module")
    for what, chosen in (("target", adapted), ("trainable module", kept)):
        for name, module in chosen:
            if any(id(p) in tied for p in module.parameters()):
                raise ValueError(
                    f"bottleneck {what} {name!r} holds a tied parameter (the output head's "
                    f"weight is the token embedding's): "
                    + ("training" if what != "target" else "adapting") + " it would change "
                    "the frozen base's embedding too; a task head of its own (score) can be "
                    "trained instead")
            if what == "target" and not list(module.parameters()):
                raise ValueError(f"bottleneck target {name!r} is a {type(module).__name__} "
                                 f"without parameters; adapt a sublayer such as attn or mlp")
    model.requires_grad_(False)
    for name, module in adapted:
        first = next(iter(module.parameters()))
        adapter = BottleneckAdapter(features, size, device=first.device, dtype=first.dtype)
        setattr(module, ATTRIBUTE, adapter.train(module.training))
        module.register_forward_hook(_adapter_output)
    for _, module in kept:
        module.requires_grad_(True)
    model.bottleneck_config = BottleneckConfig(int(size), targets, int(features), trainable)
    return model


def bottleneck_adapters(model):
    """[(dotted name, BottleneckAdapter)] of `model`, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BottleneckAdapter)]


def remove_adapters(model):
    """Take every bottleneck adapter out of `model` (the modules and their hooks), in
    place; returns the model, which then computes what the base computes. Every
    parameter is trainable again, as in a freshly built model."""
    adapters = bottleneck_adapters(model)
    if not adapters:
        raise ValueError("the model has no bottleneck adapters to remove")
    modules = dict(model.named_modules())
    for name, _ in adapters:
        owner = modules[name.rpartition(".")[0]]
        for key, hook in list(owner._forward_hooks.items()):
            if hook is _adapter_output:
                del owner._forward_hooks[key]
        delattr(owner, ATTRIBUTE)
    model.requires_grad_(True)
    model.__dict__.pop("bottleneck_config", None)
    return model


def bottleneck_parameter_shapes(shapes, config):
    """The {state_dict key: shape} of a model of parameter `shapes` once `apply_adapters`
    has adapted it with `config` (a BottleneckConfig), from the sizes alone, as
    checkpoints are checked: each adapted module gains `bottleneck.down.weight` (m, C),
    `.down.bias` (m,), `.up.weight` (C, m), `.up.bias` (C,)."""
    modules = []
    for key in shapes:
        parts = key.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in modules and any(name_matches(name, t) for t in config.targets):
                modules.append(name)
    if not modules:
        raise ValueError(f"bottleneck targets {config.targets} name no module of the model")
    out = dict(shapes)
    m, C = config.size, config.features
    for name in modules:
        out.update({f"{name}.{ATTRIBUTE}.down.weight": (m, C),
                    f"{name}.{ATTRIBUTE}.down.bias": (m,),
                    f"{name}.{ATTRIBUTE}.up.weight": (C, m),
                    f"{name}.{ATTRIBUTE}.up.bias": (C,)})
    return out
