"""int8 weights for inference: per-output-channel absmax quantisation (floor 3).

Each weight row w (one output channel of a Linear, (in,)) is stored as int8 values q and
one float scale s:

    s = max|w| / 127          q = clip(round(w / s), -127, 127)          w ~ q * s

so every element is off by at most s / 2 (rounding to the nearest step of s), and a row of
zeros gets s = 0 and q = 0 (no division by zero). -128 is never used: the range is
symmetric, so -q is always representable. One byte per weight instead of four, plus one
float32 scale per row.

`quantize_int8(model)` replaces every `Linear` by an `Int8Linear` and every `Embedding`
whose weight is tied to a Linear (a GPT's token embedding, which is also its output head,
the largest matrix of GPT-2) by an `Int8Embedding` sharing that Linear's int8 matrix and
scales: the head's output channels are the embedding's rows, so one set of per-row scales
serves both, and the tied matrix stays one matrix. Untied embeddings (a GPT's positions),
LayerNorms and biases stay in floating point: together they are a small share of the
weights, and the residual stream they act on is where rounding would cost the most.

Inference only. The forward dequantises on the fly and runs the product in the scales'
floating dtype: y = (x @ q^T) * s + b, the scale applied to the (..., out) product rather
than to the (out, in) matrix (the same numbers: s is constant along each row). NumPy has
no int8 BLAS (an int8 matmul is a plain loop, much slower than float32 sgemm), so the
values are converted to float for the product. There is no backward: every parameter of a
quantised model has requires_grad=False, an optimizer refuses int8 parameters (with a
message saying so), and a backward pass that reaches a quantised layer raises
`RuntimeError` saying the model is int8 and inference-only. These layers are a forward
path on backend arrays (the array module of the inputs: CuPy on a GPU), not ops of the
autograd registry: an op there must have a gradient to check.

`save_int8(model, path)` writes the int8 matrices and their scales (and the float
parameters) with `np.savez`, each tied matrix once; `load_int8(model, path)` reads them
back into a quantised model of the same shape. tinygpt's checkpoints are unchanged: a
checkpoint holds float weights, and a model is quantised after loading.

Imports: numpy, files (the atomic write), autograd, nn.module, nn.layers, nn.functional.
"""

import os

import numpy as np

from ..autograd import backend
from ..files import atomic_open
from ..autograd.function import Function, is_grad_enabled
from ..autograd.tensor import Tensor
from . import functional as F
from .layers import Embedding, Linear
from .module import Module, Parameter

QMAX = 127
INFERENCE_ONLY = ("this model has int8 weights (quantize_int8 / GPT.quantize) and is "
                  "inference-only: int8 layers have no backward. Train or fine-tune the "
                  "float model, then quantise it")


def quantize_per_channel(weight):
    """(q, scale) for a 2-d weight array (out, in): q int8 (out, in), scale (out,) in the
    weight's dtype, with |weight - q * scale[:, None]| <= scale / 2 element by element.

    >>> q, s = quantize_per_channel(np.array([[0.5, -1.0], [0.0, 0.0]], dtype=np.float32))
    >>> q.tolist(), s.tolist()
    ([[64, -127], [0, 0]], [0.007874015718698502, 0.0])
    """
    if weight.ndim != 2 or weight.dtype.kind != "f":
        raise ValueError(f"quantize_per_channel: expected a 2-d floating point weight (out, in), "
                         f"got shape {tuple(weight.shape)} and dtype {weight.dtype}")
    xp = backend.array_module(weight)
    absmax = xp.abs(weight).max(axis=1)                               # (out,)
    if not bool(xp.isfinite(absmax).all()):
        raise ValueError("quantize_per_channel: the weight holds NaN or infinite values")
    scale = (absmax / QMAX).astype(weight.dtype)
    # A zero row divides by 1 instead of 0: its values are all 0 and quantise to 0.
    divisor = xp.where(scale > 0, scale, 1).astype(weight.dtype)
    q = xp.clip(xp.rint(weight / divisor[:, None]), -QMAX, QMAX).astype(xp.int8)
    return q, scale


def dequantize(q, scale, dtype=None):
    """q * scale[:, None] as an array of `dtype` (default: the scales' dtype)."""
    dtype = scale.dtype if dtype is None else dtype
    return q.astype(dtype) * scale.astype(dtype)[:, None]


class _InferenceOnly(Function):
    """y = x in the forward; the backward raises. Marks the output of an int8 layer, so a
    backward pass that reaches one says why it cannot go on (not a registered op)."""

    name = "int8_inference_only"

    @staticmethod
    def forward(ctx, x, guard):
        return x

    @staticmethod
    def backward(ctx, dy):
        raise RuntimeError(INFERENCE_ONLY)


def _mark(y):
    """y, behind an `_InferenceOnly` node when a graph is being recorded."""
    if not is_grad_enabled():
        return y
    xp = backend.array_module(y.data)
    return _InferenceOnly.apply(y, Tensor(xp.zeros((), dtype=y.dtype), requires_grad=True))


def _frozen(array):
    return Parameter(array, requires_grad=False)


class Int8Linear(Module):
    """A Linear with int8 weights: x (..., in) -> y (..., out) = (x @ q^T) * scale + bias.

    weight (out, in) int8 and weight_scale (out,) float, the bias (out,) kept as it was;
    all frozen. Built from a Linear by `Int8Linear.from_linear` (or `quantize_int8`).
    """

    def __init__(self, weight, weight_scale, bias=None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight if isinstance(weight, Parameter) else _frozen(weight)
        self.weight_scale = (weight_scale if isinstance(weight_scale, Parameter)
                             else _frozen(weight_scale))
        if bias is not None:
            self.bias = bias if isinstance(bias, Parameter) else _frozen(bias)
            self.bias.requires_grad = False
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear):
        q, scale = quantize_per_channel(linear.weight.data)
        return cls(q, scale, linear.bias)

    def forward(self, x):
        # On the arrays: no graph through here (the marked output refuses a backward).
        scale = self.weight_scale.data
        w = self.weight.data.astype(scale.dtype)                   # (out, in), float
        y = F.linear(Tensor(x.data.astype(scale.dtype, copy=False)), Tensor(w)).data
        y *= scale                                                 # per output channel
        if self.bias is not None:
            y += self.bias.data
        return _mark(Tensor(y))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, int8")


class Int8Embedding(Module):
    """An Embedding whose table is int8 rows with one scale each: idx -> q[idx] * s[idx].

    Shares weight and weight_scale with the Int8Linear of a tied head."""

    def __init__(self, weight, weight_scale):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = weight if isinstance(weight, Parameter) else _frozen(weight)
        self.weight_scale = (weight_scale if isinstance(weight_scale, Parameter)
                             else _frozen(weight_scale))

    def forward(self, idx):
        ids = idx.data if isinstance(idx, Tensor) else idx
        xp = backend.array_module(self.weight.data)
        scale = self.weight_scale.data
        rows = xp.take(self.weight.data, ids, axis=0).astype(scale.dtype)     # idx.shape + (C,)
        rows *= xp.take(scale, ids, axis=0)[..., None]
        return _mark(Tensor(rows))

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def is_quantized(model):
    """True when `model` holds an int8 layer."""
    return any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules())


def quantize_int8(model):
    """Quantise `model` in place (see the module docstring) and return it: every Linear
    becomes an Int8Linear, every Embedding tied to a Linear an Int8Embedding sharing its
    int8 matrix, and every parameter is frozen. Quantising twice is an error.

    >>> layer = quantize_int8(tg.nn.Sequential(tg.nn.Linear(4, 2)))
    >>> layer[0].weight.dtype
    dtype('int8')
    """
    if not isinstance(model, Module):
        raise TypeError(f"quantize_int8: expected a Module, got {type(model).__name__}")
    if is_quantized(model):
        raise ValueError("quantize_int8: the model is already quantised to int8")
    done = {}           # id(float weight) -> Int8Linear made from it (ties share it)
    replaced = []       # (parent, name, new module)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Linear):
                # The same matrix in two Linears gets one int8 copy; biases stay their own.
                key = id(child.weight)
                if key not in done:
                    done[key] = Int8Linear.from_linear(child)
                new = Int8Linear(done[key].weight, done[key].weight_scale, child.bias)
                replaced.append((parent, name, new))
    tied = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Embedding) and id(child.weight) in done:
                source = done[id(child.weight)]
                tied.append((parent, name, Int8Embedding(source.weight, source.weight_scale)))
    for parent, name, new in replaced:
        setattr(parent, name, new)
    for parent, name, new in tied:
        setattr(parent, name, new)
    model.requires_grad_(False)
    return model


# --- files ---------------------------------------------------------------------------------
def _unique_state(model):
    """{name: parameter} for every parameter, each shared one under its first name only,
    and a dict: later name -> first name."""
    params, aliases, first = {}, {}, {}
    for name, value in model.state_dict().items():
        key = id(value.data)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
            params[name] = value
    return params, aliases


def save_int8(model, path):
    """Write a quantised model's parameters to `path` (an .npz file, np.savez): the int8
    matrices, their scales and the float parameters, each tied array once. Returns the
    file's size in bytes. Load with `load_int8` into a model quantised the same way."""
    if not is_quantized(model):
        raise ValueError("save_int8: the model is not quantised; call quantize_int8 first")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"save_int8: the path must end in .npz, got {path!r}")
    params, _ = _unique_state(model)
    with atomic_open(path) as f:        # a temporary file, synced and renamed into place
        arrays = {name: backend.to_numpy(p.data) for name, p in params.items()}
        np.savez(f, **arrays)  # numpy: host data
    return os.path.getsize(path)


def load_int8(model, path):
    """Read `save_int8`'s file into the quantised `model` (same shapes, int8 where the file
    has int8); returns the model."""
    if not is_quantized(model):
        raise ValueError("load_int8: quantise the model first (quantize_int8), then load")
    _, aliases = _unique_state(model)
    with np.load(os.fspath(path)) as f:  # numpy: host data
        state = {name: f[name] for name in f.files}
    for name, value in model.state_dict().items():
        if name in state and state[name].dtype != value.dtype:
            raise ValueError(f"load_int8: {name} is {state[name].dtype} in {path} but "
                             f"{value.dtype} in the model")
    for name, source in aliases.items():
        if source in state:
            state[name] = state[source]
    model.load_state_dict(state)
    return model


def weight_bytes(model):
    """Bytes held by the model's parameters, each shared array counted once."""
    params, _ = _unique_state(model)
    return sum(p.data.nbytes for p in params.values())
