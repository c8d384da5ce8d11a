"""`Module` and `Parameter`: the containers layers are built from (floor 3).

A `Module` holds `Parameter`s and sub-`Module`s, registered simply by assigning them as
attributes (`self.weight = Parameter(...)`, `self.ln_1 = LayerNorm(...)`), in the order
they were assigned, as in PyTorch. Everything else follows from that registry: dotted
parameter names (`transformer.h.0.attn.c_attn.weight`), `state_dict` and
`load_state_dict`, moving to a device or dtype, train/eval mode. Imports: autograd, validate.
"""

from collections import OrderedDict, namedtuple

import numpy as np

from .. import validate
from ..autograd import backend
from ..autograd.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates: a leaf that requires grad.

    `.name` is filled with the parameter's dotted name the first time a module lists it
    with `named_parameters()`, so graph tools can label the leaves.

    >>> w = Parameter(tg.zeros(3, 2))
    >>> w.requires_grad, w.is_leaf
    (True, True)
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by `register_forward_hook`; `.remove()` unregisters the hook."""

    __slots__ = ("hooks", "key")
    _next_key = 0

    def __init__(self, hooks):
        self.hooks = hooks
        self.key = RemovableHandle._next_key
        RemovableHandle._next_key += 1

    def remove(self):
        self.hooks.pop(self.key, None)


# What load_state_dict returns, as PyTorch's.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model.

    A subclass calls `super().__init__()` first, assigns its parameters and sub-modules
    as attributes, and defines `forward`; calling the module runs `forward` (and the
    forward hooks).

    >>> class Affine(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = Parameter(tg.ones(3))
    ...     def forward(self, x):
    ...         return x * self.w
    >>> [name for name, _ in Affine().named_parameters()]
    ['w']
    """

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these registries to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration ----------------------------------------------------------------
    def __setattr__(self, name, value):
        # A Parameter or Module goes into its registry *and* into the instance dict: the
        # registry gives names and order, the plain attribute gives fast lookups in forward.
        params = self.__dict__.get("_parameters")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError(
                f"cannot assign {type(value).__name__} {name!r} before Module.__init__() "
                f"was called: call super().__init__() first in {type(self).__name__}.__init__")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                    f"{type(self).__name__}: expected a Parameter or None")
            params[name] = None
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to sub-module {name!r} of "
                    f"{type(self).__name__}: expected a Module or None")
            self._modules[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a parameter (or None: a declared but absent parameter, like bias=False)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a Parameter or None, got "
                f"{type(param).__name__}")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def add_module(self, name, module):
        """Add a sub-module under `name` (names such as "0" are fine: ModuleList uses them)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # --- calling ---------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks.values()):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook):
        """Call `hook(module, inputs, output)` after every forward; a non-None return
        value replaces the output. Returns a handle whose `.remove()` unregisters it."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.key] = hook
        return handle

    # --- traversal -------------------------------------------------------------------
    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every module below it, each once,
        parents before children ("" is this module)."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            # Reversed onto the stack so children come out in registration order.
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module.named_children()]
            stack.extend(reversed(children))

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs. A parameter shared by two modules (the tied
        head) is listed once, under the first name met, as in PyTorch."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                full = f"{module_name}.{name}" if module_name else name
                if param.name is None:
                    param.name = full
                yield full, param

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def num_parameters(self, only_trainable=False):
        """The number of scalars in the parameters, each shared parameter counted once."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not only_trainable)

    def apply(self, fn):
        """Call `fn(module)` on every sub-module (children first) and on self; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --- modes and gradients -----------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (dropout active) on this module and every sub-module."""
        mode = validate.boolean("train(mode): mode", mode)
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Set evaluation mode (dropout off); the same as `train(False)`."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set every `.grad` to None (PyTorch's default), or to zeros."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.data[...] = 0

    # --- state -----------------------------------------------------------------------
    def _state_items(self):
        """(dotted name, Parameter) for every parameter slot, shared ones under every name."""
        for module_name, module in self._all_named_modules():
            for name, param in module._parameters.items():
                if param is not None:
                    yield (f"{module_name}.{name}" if module_name else name), param

    def _all_named_modules(self, prefix=""):
        # Unlike named_modules, a module reachable under two names is listed under both,
        # so state_dict has a key for every path (PyTorch does the same).
        yield prefix, self
        for name, child in self.named_children():
            yield from child._all_named_modules(f"{prefix}.{name}" if prefix else name)

    def state_dict(self):
        """An ordered dict: dotted name -> Tensor sharing the parameter's data (detached).

        A tied parameter appears under every name it has (`transformer.wte.weight` and
        `lm_head.weight`), as in PyTorch; both values share one array.
        """
        return OrderedDict((name, param.detach()) for name, param in self._state_items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy `state_dict`'s values (Tensors or arrays) into the parameters, in place.

        Everything is checked before anything is written: with strict=True, any missing or
        unexpected key fails, and a shape mismatch always fails; the error names every
        problem at once and the module is left unchanged. Values are cast to each
        parameter's dtype and moved to its device; tied parameters stay tied. Returns
        `IncompatibleKeys(missing_keys, unexpected_keys)`.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(
                f"load_state_dict: expected a mapping of names to tensors, got "
                f"{type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        sources = []
        for key, param in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.data if isinstance(value, Tensor) else value
            if not hasattr(array, "shape") or not hasattr(array, "dtype"):
                array = np.asarray(array)  # numpy: host data (lists or scalars from the user)
            if array.dtype.kind not in "fiub":
                problems.append(f"{key}: values of dtype {array.dtype} are not numbers")
            elif tuple(array.shape) != tuple(param.shape):
                problems.append(
                    f"{key}: shape mismatch, {tuple(array.shape)} in the state dict but "
                    f"{tuple(param.shape)} in the model")
            else:
                sources.append((param, array))
        if problems:
            raise ValueError(
                f"load_state_dict: the state dict does not fit {type(self).__name__} "
                f"(nothing was loaded):\n  " + "\n  ".join(problems))
        for param, array in sources:
            # In place: the Parameter objects (and so ties and optimizer references) stay.
            param.data[...] = backend.to_device(array, param.device)
        return IncompatibleKeys(missing, unexpected)

    def to(self, device_or_dtype=None, dtype=None, device=None):
        """Move every parameter (and gradient) to a device and/or cast floating ones to a
        dtype, in place; returns self. Shared parameters stay shared.

        >>> model.to(tg.float64) is model      # also model.to("cuda"), model.to("float32")
        True
        """
        if device_or_dtype is not None:
            if _is_device(device_or_dtype):
                device = device_or_dtype
            else:
                dtype = device_or_dtype
        if device is not None:
            device = backend.normalize_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to: dtype must be floating point, got {dtype}")
        for param in self.parameters():
            param.data = _convert(param.data, dtype, device)
            if param.grad is not None:
                param.grad.data = _convert(param.grad.data, dtype, device)
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # --- printing --------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses (its settings); "" by default."""
        return ""

    def _repr_lines(self):
        children = [(name, module._nested_repr()) for name, module in self.named_children()]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("]
        if extra:
            lines.append("  " + extra)
        for name, text in children:
            lines.append(f"  ({name}): " + text.replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)

    def _nested_repr(self):
        return self._repr_lines()

    def __repr__(self):
        # The count goes on the top level only: nested modules show their structure.
        return f"{self._repr_lines()}  # {self.num_parameters():,} parameters"


def name_matches(name, target):
    """Whether the module called `name` (dotted, as `named_modules` gives it) is `target`:
    the same name, or one ending in "." + target ("transformer.h.0.attn.c_attn" is
    "c_attn" and "attn.c_attn")."""
    return name == target or name.endswith("." + target)


def _is_device(arg):
    if not isinstance(arg, str):
        return False
    return arg == "cpu" or arg == "cuda" or arg.startswith("cuda:")


def _convert(array, dtype, device):
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None:
        array = backend.to_device(array, device)
    return array
