"""The layers: `Linear`, `Embedding`, `LayerNorm`, `Dropout`, `GELU` and the containers
`ModuleList`, `ModuleDict`, `Sequential` (floor 3).

Each layer owns its parameters and calls one function of `nn.functional` in `forward`.
Names, argument orders, parameter shapes and default initialisations are PyTorch's, so a
model written with these layers reads (and loads weights) like its PyTorch twin. Random
initialisation goes through `nn.init` (the CPU generator seeded by `tg.manual_seed`).
Optional `device=` and `dtype=` arguments place the parameters (float32 on the CPU by
default). Imports: autograd, nn.functional, nn.module, nn.init.
"""

import math
import numbers
from collections import OrderedDict

from ..autograd import backend
from . import functional as F
from . import init
from .module import Module, Parameter


def _positive_int(value, what, layer):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: {what} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{layer}: {what} must be positive, got {value}")
    return int(value)


def _empty_parameter(shape, dtype, device):
    """A Parameter of uninitialised memory; the layer fills it at once."""
    device = backend.normalize_device(device)
    dtype = backend.DEFAULT_FLOAT if dtype is None else dtype
    return Parameter(backend.array_module_for_device(device).empty(shape, dtype=dtype))


class Linear(Module):
    """y = x @ weight^T + bias: x (..., in_features) -> y (..., out_features).

    weight (out_features, in_features) and bias (out_features,), both initialised from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = out_features = _positive_int(out_features, "out_features", "Linear")
        bound = 1.0 / math.sqrt(in_features)
        self.weight = init.uniform_(
            _empty_parameter((out_features, in_features), dtype, device), -bound, bound)
        if bias:
            self.bias = init.uniform_(_empty_parameter((out_features,), dtype, device),
                                      -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of weight, shape idx.shape + (C,).

    weight (num_embeddings, embedding_dim), initialised from N(0, 1) as in PyTorch.
    """

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = _positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = _positive_int(embedding_dim, "embedding_dim", "Embedding")
        self.weight = init.normal_(
            _empty_parameter((self.num_embeddings, self.embedding_dim), dtype, device))

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` axes to mean 0 and variance 1, then
    scale by weight (ones at first) and shift by bias (zeros; None with bias=False)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(
            _positive_int(n, "normalized_shape", "LayerNorm") for n in normalized_shape)
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be positive, got {eps}")
        self.eps = float(eps)
        if elementwise_affine:
            self.weight = init.ones_(_empty_parameter(self.normalized_shape, dtype, device))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = init.zeros_(_empty_parameter(self.normalized_shape, dtype, device))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.weight is not None}, bias={self.bias is not None}")


class Dropout(Module):
    """In training mode, zero each element with probability p and scale the others by
    1 / (1 - p); in eval mode (`module.eval()`), the identity."""

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """GELU activation; approximate="none" (erf, PyTorch's default) or "tanh" (GPT-2's)."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


# --- containers --------------------------------------------------------------------------
class ModuleList(Module):
    """A list of modules, registered under the names "0", "1", ... (so a parameter of the
    third block is `h.2.attn.c_attn.weight`)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, i):
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"ModuleList index {i} out of range for {n} modules")
        return i % n

    def __getitem__(self, i):
        modules = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(modules[i])
        return modules[self._index(i)]

    def __setitem__(self, i, module):
        self.add_module(str(self._index(i)), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def _repr_lines(self):
        # Runs of identical children print once, as PyTorch: "(0-11): 12 x Block(...)".
        items = [(name, module._nested_repr()) for name, module in self.named_children()]
        if not items:
            return "ModuleList()"
        lines, i = ["ModuleList("], 0
        while i < len(items):
            j = i
            while j + 1 < len(items) and items[j + 1][1] == items[i][1]:
                j += 1
            text = items[i][1].replace("\n", "\n  ")
            if j > i:
                lines.append(f"  ({items[i][0]}-{items[j][0]}): {j - i + 1} x {text}")
            else:
                lines.append(f"  ({items[i][0]}): {text}")
            i = j + 1
        lines.append(")")
        return "\n".join(lines)


class ModuleDict(Module):
    """An ordered dict of modules, registered under their keys (nanoGPT's `transformer`)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            for name, module in dict(modules).items():
                self[name] = module

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict[{name!r}]: expected a Module, got {type(module).__name__}")
        self.add_module(name, module)

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


class Sequential(Module):
    """Modules applied one after another: Sequential(a, b, c)(x) == c(b(a(x))).

    Also takes an OrderedDict of named modules.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                if not isinstance(module, Module):
                    raise TypeError(
                        f"Sequential: argument {i} is a {type(module).__name__}, not a Module")
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, i):
        modules = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*modules[i])
        if not -len(modules) <= i < len(modules):
            raise IndexError(f"Sequential index {i} out of range for {len(modules)} modules")
        return modules[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self
