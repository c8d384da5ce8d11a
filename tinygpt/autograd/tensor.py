"""`Tensor` and one method per operator (floor 2).

A Tensor wraps a backend array (`.data`: a NumPy array on the CPU, a CuPy array on CUDA)
and, when it was made by an op that needs a gradient, a link to that op's ctx (`_ctx`):
the graph. Each operator below is one explicit line that calls its op's `apply`, so "go
to definition" lands on the op's real forward and backward. Binary operators promote
dtypes as PyTorch does, not as NumPy 2 does (`dtypes.operands`). The factories (`tensor`,
`zeros`, `randn`, ...) are in factories.py, the dtypes and their promotion in dtypes.py,
the checks of dimension, shape and index arguments in shapes.py. Imports: backend, validate,
function, engine, ops, dtypes, shapes.
"""

from collections import namedtuple

import numpy as np

from .. import validate
from . import backend

# `x.max(dim)` returns values and indices, as PyTorch's does.
MaxResult = namedtuple("max", ["values", "indices"])

class Tensor:
    """An n-dimensional array that remembers how it was computed, for `backward()`.

    >>> x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    tensor([2., 4., 6.])
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_hooks", "_retains_grad", "name",
                 "__weakref__")
    # NumPy operators defer to ours: ndarray + Tensor calls Tensor.__radd__.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False):
        if type(data) is not np.ndarray:
            data = _as_array(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(
                f"only floating point tensors can require gradients, got dtype {data.dtype}; "
                "integer tensors hold indices")
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._ctx = None
        self._hooks = None
        self._retains_grad = False
        self.name = None

    # --- attributes -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return "cpu" if type(self.data) is np.ndarray else "cuda"

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        """The ctx of the op that made this tensor (None for a leaf)."""
        return self._ctx

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.data.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="tensor(")
        extra = ""
        if self.dtype not in (float32, int64, bool_):
            extra += f", dtype={self.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{type(self._ctx).__name__}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        array = backend.to_numpy(self.data)
        return array if dtype is None else array.astype(dtype)

    # --- conversion ---------------------------------------------------------------------
    def numpy(self):
        """A NumPy copy of the data (copied from the GPU when it lives there)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.data.size != 1:
            raise ValueError(
                f"item() needs a tensor of one element, got shape {tuple(self.shape)}")
        return self.data.reshape(()).item()

    def detach(self):
        """The same data, cut from the graph (shares memory, as in PyTorch)."""
        return Tensor(self.data)

    def clone(self):
        return CloneOp.apply(self)

    def contiguous(self):
        return self

    def to(self, device_or_dtype=None, dtype=None, device=None):
        """A copy on another device and/or of another dtype; `self` when nothing changes.

        Differentiable: gradients flow back to the original tensor (as PyTorch's `.to`).
        """
        if device_or_dtype is not None:
            if isinstance(device_or_dtype, str) and not device_or_dtype.startswith(
                    ("float", "int", "uint", "bool")):
                device = device_or_dtype
            else:
                dtype = device_or_dtype
        out = self
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype != self.dtype:
                out = CastOp.apply(out, dtype=dtype) if self.requires_grad and dtype.kind == "f" \
                    else Tensor(out.data.astype(dtype))
        if device is not None:
            device = backend.normalize_device(device)
            if device != out.device:
                out = ToDeviceOp.apply(out, device=device) if out.requires_grad \
                    else Tensor(backend.to_device(out.data, device))
        return out

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(
                f"only floating point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    # --- autograd -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad.

        `grad` is the upstream gradient; it may be omitted only for a one-element tensor.
        The graph is freed afterwards unless `retain_graph=True`.
        """
        from .engine import backward
        backward(self, grad, retain_graph=retain_graph)

    def register_hook(self, fn):
        """Call `fn(grad)` with this tensor's gradient during backward; a non-None
        return value replaces the gradient. Returns a handle with `.remove()`."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(fn)
        return _HookHandle(self._hooks, fn)

    def retain_grad(self):
        """Keep `.grad` on this intermediate (non-leaf) tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("cannot retain_grad on a tensor that does not require grad")
        self._retains_grad = True

    def zero_(self):
        self.data[...] = 0
        return self

    def to_dot(self, **kwargs):
        """Graphviz DOT text of the graph that produced this tensor (see `autograd.to_dot`)."""
        from .graph import to_dot
        return to_dot(self, **kwargs)

    # --- operators: the two operands in one dtype by PyTorch's rules (dtypes.operands) ----
    def __add__(self, other):
        return AddOp.apply(*operands(self, other))

    def __radd__(self, other):
        a, b = operands(self, other)
        return AddOp.apply(b, a)

    def __sub__(self, other):
        return SubOp.apply(*operands(self, other))

    def __rsub__(self, other):
        a, b = operands(self, other)
        return SubOp.apply(b, a)

    def __mul__(self, other):
        return MulOp.apply(*operands(self, other))

    def __rmul__(self, other):
        a, b = operands(self, other)
        return MulOp.apply(b, a)

    def __truediv__(self, other):
        return DivOp.apply(*floating_operands(*operands(self, other)))

    def __rtruediv__(self, other):
        a, b = floating_operands(*operands(self, other))
        return DivOp.apply(b, a)

    def __pow__(self, other):
        return PowOp.apply(*operands(self, other))

    def __rpow__(self, other):
        a, b = operands(self, other)
        return PowOp.apply(b, a)

    def __neg__(self):
        return NegOp.apply(self)

    def __matmul__(self, other):
        return MatMulOp.apply(*operands(self, other))

    def __rmatmul__(self, other):
        a, b = operands(self, other)
        return MatMulOp.apply(b, a)

    def __getitem__(self, index):
        return IndexOp.apply(self, index=normalize_index(index, self))

    # Comparisons give boolean tensors and are not differentiable.
    def _compared(self, other):
        """The right-hand operand of a comparison, on this tensor's device: a tensor of
        another device is an error naming both, host data (a NumPy array or a list) is
        copied to the GPU (whose ufuncs take no NumPy arrays), scalars stay as they are."""
        if isinstance(other, Tensor):
            if type(other.data) is not type(self.data):
                _device_mismatch("comparison", (self, other))
            return other.data
        if type(self.data) is np.ndarray or isinstance(other, (int, float, bool)):
            return other
        return backend.array_module(self.data).asarray(other)

    def __lt__(self, other):
        return Tensor(self.data < self._compared(other))

    def __le__(self, other):
        return Tensor(self.data <= self._compared(other))

    def __gt__(self, other):
        return Tensor(self.data > self._compared(other))

    def __ge__(self, other):
        return Tensor(self.data >= self._compared(other))

    def __eq__(self, other):
        return Tensor(self.data == self._compared(other))

    def __ne__(self, other):
        return Tensor(self.data != self._compared(other))

    # --- methods ------------------------------------------------------------------------
    def exp(self):
        return ExpOp.apply(self)

    def log(self):
        return LogOp.apply(self)

    def sqrt(self):
        return SqrtOp.apply(self)

    def tanh(self):
        return TanhOp.apply(self)

    def sigmoid(self):
        return SigmoidOp.apply(self)

    def relu(self):
        return ReluOp.apply(self)

    def abs(self):
        return AbsOp.apply(self)

    def sum(self, dim=None, keepdim=False):
        return SumOp.apply(self, axis=axes_of(dim, self.ndim), keepdims=keepdim)

    def mean(self, dim=None, keepdim=False):
        return MeanOp.apply(self, axis=axes_of(dim, self.ndim), keepdims=keepdim)

    def max(self, dim=None, keepdim=False):
        """The largest element, or `(values, indices)` along `dim` (as PyTorch).

        Ties: without `dim` the gradient is split evenly among the tied maxima; with
        `dim` it all goes to the index returned (the first maximum).
        """
        if dim is None:
            return MaxOp.apply(self, axis=None, keepdims=False)
        axis = axis_index(dim, self.ndim)
        if self.ndim == 0:  # as PyTorch: the element itself, at index 0
            return MaxResult(self.reshape(()), Tensor(np.zeros((), dtype=int64)))
        xp = backend.array_module(self.data)
        indices = xp.argmax(self.data, axis=axis, keepdims=keepdim)
        return MaxResult(MaxOp.apply(self, axis=axis, keepdims=keepdim), Tensor(indices))

    def argmax(self, dim=None, keepdim=False):
        xp = backend.array_module(self.data)
        if dim is None:
            return Tensor(xp.asarray(xp.argmax(self.data)))
        return Tensor(xp.argmax(self.data, axis=axis_index(dim, self.ndim), keepdims=keepdim))

    def softmax(self, dim):
        if self.ndim == 0:  # a single element: softmax over it is that element's axis
            return self.reshape(1).softmax(0).reshape(())
        return SoftmaxOp.apply(self, axis=axis_index(dim, self.ndim))

    def log_softmax(self, dim):
        if self.ndim == 0:
            return self.reshape(1).log_softmax(0).reshape(())
        return LogSoftmaxOp.apply(self, axis=axis_index(dim, self.ndim))

    def reshape(self, *shape):
        shape = shape_arg(shape)
        return ReshapeOp.apply(self, shape=resolve_shape(shape, self.shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = axis_index(start_dim, self.ndim), axis_index(end_dim, self.ndim)
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        return self.reshape(shape)

    def unsqueeze(self, dim):
        dim = axis_index(dim, self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = axis_index(dim, self.ndim)
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def transpose(self, dim0, dim1):
        if self.ndim == 0:  # dims 0 / -1 of a 0-d tensor: nothing to swap
            axis_index(dim0, 0), axis_index(dim1, 0)
            return self.reshape(())
        return TransposeOp.apply(self, dim0=axis_index(dim0, self.ndim),
                                 dim1=axis_index(dim1, self.ndim))

    def permute(self, *dims):
        dims = shape_arg(dims)
        axes = tuple(axis_index(d, self.ndim) for d in dims)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(
                f"permute: dims {tuple(dims)} are not a permutation of the {self.ndim} "
                f"dimensions of a tensor of shape {tuple(self.shape)}")
        return PermuteOp.apply(self, axes=axes)

    def expand(self, *shape):
        shape = shape_arg(shape)
        shape = tuple(old if new == -1 else new
                      for old, new in zip((1,) * (len(shape) - self.ndim) + self.shape, shape))
        return ExpandOp.apply(self, shape=shape)

    def masked_fill(self, mask, value):
        """Elements where `mask` (boolean, broadcastable to this shape) is True become `value`."""
        mask = mask if isinstance(mask, Tensor) else Tensor(mask)
        if mask.dtype != bool_:
            raise TypeError(f"masked_fill: mask must be a boolean tensor, got dtype {mask.dtype}")
        return MaskedFillOp.apply(self, mask, value=float(value))

    def split(self, split_size_or_sections, dim=0):
        """Chunks along `dim`: of size `split_size_or_sections` (an int; the last may be
        smaller) or of the listed sizes, which must add up to the dimension."""
        axis = axis_index(dim, self.ndim)
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            validate.positive_integer("split: split_size_or_sections", split_size_or_sections)
            sizes = [min(split_size_or_sections, n - i) for i in range(0, n, split_size_or_sections)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(
                    f"split: sizes {sizes} add up to {sum(sizes)}, expected dimension {dim} "
                    f"of size {n}")
        out, start = [], 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size),)
            out.append(IndexOp.apply(self, index=index))
            start += size
        return tuple(out)

    def chunk(self, chunks, dim=0):
        n = self.shape[axis_index(dim, self.ndim)]
        return self.split(-(-n // chunks), dim)


class _HookHandle:
    __slots__ = ("hooks", "fn")

    def __init__(self, hooks, fn):
        self.hooks, self.fn = hooks, fn

    def remove(self):
        if self.fn in self.hooks:
            self.hooks.remove(self.fn)


# --- helpers ----------------------------------------------------------------------------
def _as_array(data):
    """A backend array from NumPy scalars, CuPy arrays (kept) or Python data."""
    if isinstance(data, np.generic):
        return np.asarray(data)
    if isinstance(data, Tensor):
        return data.data
    if type(data).__module__.startswith("cupy"):
        return data
    return np.asarray(data)


from .function import _device_mismatch, no_grad  # noqa: E402,F401  (function.py imports us)
from .ops.elementwise import (AbsOp, AddOp, CastOp, CloneOp, DivOp, ExpOp,  # noqa: E402
                              LogOp, MaskedFillOp, MulOp, NegOp, PowOp, ReluOp, SigmoidOp,
                              SqrtOp, SubOp, TanhOp, ToDeviceOp)
from .ops.reduce import MaxOp, MeanOp, SumOp  # noqa: E402
from .ops.shape import ExpandOp, IndexOp, PermuteOp, ReshapeOp, TransposeOp  # noqa: E402
from .ops.matmul import MatMulOp  # noqa: E402
from .ops.fused import LogSoftmaxOp, SoftmaxOp  # noqa: E402
from .dtypes import bool_, float32, float64, floating_operands, int64, operands  # noqa: E402
from .shapes import axes_of, axis_index, normalize_index, resolve_shape, shape_arg  # noqa: E402
