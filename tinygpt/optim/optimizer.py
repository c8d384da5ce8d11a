"""The optimizer base class: parameter groups, per-parameter state, save and load (floor 4).

An optimizer holds `param_groups`, a list of dicts as in PyTorch: each has "params" (a list
of tensors) and its own hyper-parameters ("lr", "weight_decay", ...), so one model can give
its weights and its biases different settings. `state[p]` holds what the update rule keeps
per parameter (AdamW's moment estimates, SGD's momentum buffer) as backend arrays on the
parameter's device, created on the first `step()`.

A subclass implements `_update(group, p, g, state, scratch)`, which changes `p.data` in place
from the gradient array `g`; `scratch` is a work array of p's shape and dtype that the
update may overwrite. One scratch buffer per (device, dtype), as large as the largest
parameter, is shared by every parameter, so a step allocates nothing after the first. A
subclass may instead override `_update_all(items)` to update all parameters together
(AdamW does, block by block on several threads).

Imports: autograd (backend, Tensor), validate.
"""

import math

from .. import validate
from ..autograd import backend
from ..autograd.tensor import Tensor


def _check_number(name, value, low=0.0, high=math.inf, high_open=False):
    """float(value) when it is a finite number with low <= value <= high (value < high
    when high_open); else an error naming the hyper-parameter, its value and the allowed
    range (`validate.real`: a TypeError for a value that is not a number)."""
    return validate.real(name, value, minimum=low,
                         maximum=None if high == math.inf else high, high_open=high_open)


def int8_hint(p):
    """The words to add to an error about a parameter that is an int8 weight."""
    if p.dtype.kind == "i" and p.dtype.itemsize == 1:
        return ("; the model is int8 (quantised for inference, tinygpt.nn.quantize_int8) and "
                "inference-only: train the float model, then quantise it")
    return ""


class Optimizer:
    """Base class: `step()`, `zero_grad()`, `state_dict()`, `load_state_dict()`.

    params:   an iterable of Tensors, or of dicts {"params": [...], "lr": ..., ...}
              (parameter groups; a key missing from a group takes the default).
    defaults: the hyper-parameters of the subclass and their default values.
    """

    # The per-parameter state entries a subclass keeps (checked by load_state_dict).
    state_keys = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}      # Tensor -> dict of state (Tensors hash by identity)
        self._scratch = {}   # (device, dtype) -> flat work array shared by all parameters
        if isinstance(params, Tensor):
            raise TypeError(
                "params must be an iterable of Tensors or of dicts, got a single Tensor; "
                "wrap it in a list: [param]")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Append a group {"params": [...], hyper-parameter: value, ...}; missing
        hyper-parameters take the defaults, unknown ones raise."""
        if not isinstance(group, dict):
            raise TypeError(
                f"a parameter group must be a dict with a 'params' key, got "
                f"{type(group).__name__} (do not mix Tensors and dicts in one list)")
        if "params" not in group:
            raise ValueError(f"parameter group {sorted(group)} has no 'params' key")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {sorted(unknown)} in a parameter group of "
                f"{type(self).__name__}; expected some of {sorted(self.defaults)}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but parameter {i} of group "
                    f"{len(self.param_groups)} is a {type(p).__name__}")
            if p.dtype.kind != "f":
                raise TypeError(
                    f"parameter {i} of group {len(self.param_groups)} has dtype {p.dtype}; "
                    "only floating point tensors can be optimized" + int8_hint(p))
            if not p.is_leaf:
                raise ValueError(
                    f"parameter {i} of group {len(self.param_groups)} is not a leaf tensor "
                    "(it was computed by an op); optimize the tensors it was computed from")
            if id(p) in seen:
                raise ValueError(
                    "some parameters appear in more than one parameter group (or twice in one)")
            seen.add(id(p))
        new = {**self.defaults, **group, "params": params}
        self._validate_group(new)
        self.param_groups.append(new)

    def _validate_group(self, group):
        """Check a group's hyper-parameters; subclasses raise ValueError on a bad one."""

    # --- the update ----------------------------------------------------------------------
    def step(self):
        """Update every parameter that has a gradient, in place (all gradients are checked
        first: a bad one leaves every parameter as it was)."""
        items = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if g.shape != p.data.shape:
                    raise ValueError(
                        f"parameter of shape {tuple(p.data.shape)} has a gradient of shape "
                        f"{tuple(g.shape)}")
                items.append((group, p, g))
        self._update_all(items)

    def _state(self, p):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {}
        return state

    def _update_all(self, items):
        """Apply the update to each (group, p, g); a subclass may do them together."""
        for group, p, g in items:
            self._update(group, p, g, self._state(p), self._scratch_for(p.data))

    def _update(self, group, p, g, state, scratch):
        raise NotImplementedError

    def _scratch_for(self, array):
        """A work array of `array`'s shape and dtype, shared by all parameters of that
        device and dtype (it grows to the largest parameter seen)."""
        key = (backend.device_of(array), array.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.size < array.size:
            largest = max((p.data.size for g in self.param_groups for p in g["params"]
                           if backend.device_of(p.data) == key[0] and p.dtype == array.dtype),
                          default=array.size)
            xp = backend.array_module(array)
            buf = self._scratch[key] = xp.empty(max(largest, array.size), dtype=array.dtype)
        return buf[:array.size].reshape(array.shape)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set `.grad` to None (the default, as in PyTorch: the next
        backward allocates fresh ones), or fill them with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data.fill(0)

    # --- save and load -----------------------------------------------------------------
    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{"state": {index: {name: NumPy array or number}}, "param_groups": [...]}.

        Parameters are numbered in group order, as in PyTorch; each group lists its
        parameters' indices under "params" and its hyper-parameters. Arrays are NumPy
        copies (also from the GPU), so the dict can be pickled or saved with NumPy.
        """
        index = {id(p): i for i, p in enumerate(self._indexed_params())}
        state = {}
        for p, entries in self.state.items():
            state[index[id(p)]] = {
                k: backend.to_numpy(v) if hasattr(v, "shape") else v for k, v in entries.items()}
        groups, start = [], 0
        for group in self.param_groups:
            saved = {k: (tuple(v) if isinstance(v, tuple) else v)
                     for k, v in group.items() if k != "params"}
            saved["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore `state_dict()`'s output: the per-parameter state (copied to each
        parameter's device and dtype) and every group's hyper-parameters.

        Everything is checked before anything changes: the number of groups, the number of
        parameters in each, the state entries and their shapes. A mismatch raises
        ValueError naming it, and leaves the optimizer as it was.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                f"not an optimizer state dict: expected keys ['param_groups', 'state'], got "
                f"{keys}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"the state dict has {len(saved_groups)} parameter group(s), this optimizer "
                f"has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(saved['params'])} parameter(s) in the state "
                    f"dict and {len(group['params'])} in this optimizer")
            unknown = set(saved) - set(self.defaults) - {"params"}
            if unknown:
                raise ValueError(
                    f"parameter group {i} of the state dict has hyper-parameter(s) "
                    f"{sorted(unknown)} that {type(self).__name__} does not know (saved by "
                    "another optimizer?)")
        params = self._indexed_params()
        by_saved_index = {}
        for saved, group in zip(saved_groups, self.param_groups):
            by_saved_index.update(zip(saved["params"], group["params"]))
        new_state = {}
        for index, entries in state_dict["state"].items():
            if index not in by_saved_index:
                raise ValueError(
                    f"the state dict has state for parameter {index}, but only "
                    f"{len(params)} parameters are listed in its groups")
            p = by_saved_index[index]
            if entries and set(entries) != set(self.state_keys):
                raise ValueError(
                    f"state of parameter {index} has entries {sorted(entries)}; "
                    f"{type(self).__name__} keeps {list(self.state_keys)}")
            device = backend.device_of(p.data)
            restored = {}
            for key, value in entries.items():
                if hasattr(value, "shape") and value.ndim > 0:
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(
                            f"state {key!r} of parameter {index} has shape "
                            f"{tuple(value.shape)}, but the parameter has shape "
                            f"{tuple(p.shape)}")
                    # A copy in the parameter's dtype, on its device (as PyTorch does).
                    value = backend.to_device(
                        backend.to_numpy(value).astype(p.dtype, copy=False), device)
                elif hasattr(value, "item"):
                    value = value.item()
                restored[key] = value
            new_state[p] = restored
        # Everything checked: now change the optimizer.
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) else value
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
