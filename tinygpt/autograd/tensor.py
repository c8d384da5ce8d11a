"""`Tensor`, the factories (`tensor`, `zeros`, `randn`, ...) and one method per operator (floor 2).

A Tensor wraps a backend array (`.data`: a NumPy array on the CPU, a CuPy array on CUDA)
and, when it was made by an op that needs a gradient, a link to that op's ctx (`_ctx`):
the graph. Each operator below is one explicit line that calls its op's `apply`, so "go
to definition" lands on the op's real forward and backward. Binary operators promote
dtypes as PyTorch does, not as NumPy 2 does (`Tensor._pair`): int64 + float32 is float32,
float32 + a 0-d float64 is float32, and integers divide as float32. Imports: backend, function,
engine, ops.
"""

from collections import namedtuple

import numpy as np

from . import backend

float16, float32, float64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
int32, int64, uint8, bool_ = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8), np.dtype(bool)

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

    # --- operators ----------------------------------------------------------------------
    def _lift(self, other):
        """Wrap a Python/NumPy scalar or array as a constant tensor.

        A Python float takes this tensor's float dtype, so float32 stays float32 (NumPy 2
        would promote to float64 through a NumPy float64 scalar).
        """
        if isinstance(other, Tensor):
            return other
        xp = backend.array_module(self.data)
        if self.dtype.kind == "f":
            dtype = self.dtype
        elif isinstance(other, float):
            dtype = backend.DEFAULT_FLOAT
        else:
            dtype = None
        return Tensor(xp.asarray(other, dtype=dtype))

    def _pair(self, other):
        """(self, other) as the operands of a binary op, in one dtype by PyTorch's rules:
        across categories (bool < integer < floating) the higher category's dtype wins
        (int64 + float32 is float32, where NumPy gives float64); within one, a dimensioned
        tensor's dtype wins over a 0-d one's (float32 + a 0-d float64 is float32), and
        otherwise the wider dtype (float32 + float64 is float64)."""
        other = self._lift(other)
        a, b = self.dtype, other.dtype
        if a == b:
            return self, other
        target = _promoted(a, b, self.ndim == 0, other.ndim == 0)
        return (self if a == target else self.to(target),
                other if b == target else other.to(target))

    def __add__(self, other):
        return AddOp.apply(*self._pair(other))

    def __radd__(self, other):
        a, b = self._pair(other)
        return AddOp.apply(b, a)

    def __sub__(self, other):
        return SubOp.apply(*self._pair(other))

    def __rsub__(self, other):
        a, b = self._pair(other)
        return SubOp.apply(b, a)

    def __mul__(self, other):
        return MulOp.apply(*self._pair(other))

    def __rmul__(self, other):
        a, b = self._pair(other)
        return MulOp.apply(b, a)

    def __truediv__(self, other):
        return DivOp.apply(*_floating(*self._pair(other)))

    def __rtruediv__(self, other):
        a, b = _floating(*self._pair(other))
        return DivOp.apply(b, a)

    def __pow__(self, other):
        return PowOp.apply(*self._pair(other))

    def __rpow__(self, other):
        a, b = self._pair(other)
        return PowOp.apply(b, a)

    def __neg__(self):
        return NegOp.apply(self)

    def __matmul__(self, other):
        return MatMulOp.apply(*self._pair(other))

    def __rmatmul__(self, other):
        a, b = self._pair(other)
        return MatMulOp.apply(b, a)

    def __getitem__(self, index):
        return IndexOp.apply(self, index=_normalize_index(index, self))

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
        return SumOp.apply(self, axis=_axes(dim, self.ndim), keepdims=keepdim)

    def mean(self, dim=None, keepdim=False):
        return MeanOp.apply(self, axis=_axes(dim, self.ndim), keepdims=keepdim)

    def max(self, dim=None, keepdim=False):
        """The largest element, or `(values, indices)` along `dim` (as PyTorch).

        Ties: without `dim` the gradient is split evenly among the tied maxima; with
        `dim` it all goes to the index returned (the first maximum).
        """
        if dim is None:
            return MaxOp.apply(self, axis=None, keepdims=False)
        axis = _axis(dim, self.ndim)
        if self.ndim == 0:  # as PyTorch: the element itself, at index 0
            return MaxResult(self.reshape(()), Tensor(np.zeros((), dtype=int64)))
        xp = backend.array_module(self.data)
        indices = xp.argmax(self.data, axis=axis, keepdims=keepdim)
        return MaxResult(MaxOp.apply(self, axis=axis, keepdims=keepdim), Tensor(indices))

    def argmax(self, dim=None, keepdim=False):
        xp = backend.array_module(self.data)
        if dim is None:
            return Tensor(xp.asarray(xp.argmax(self.data)))
        return Tensor(xp.argmax(self.data, axis=_axis(dim, self.ndim), keepdims=keepdim))

    def softmax(self, dim):
        if self.ndim == 0:  # a single element: softmax over it is that element's axis
            return self.reshape(1).softmax(0).reshape(())
        return SoftmaxOp.apply(self, axis=_axis(dim, self.ndim))

    def log_softmax(self, dim):
        if self.ndim == 0:
            return self.reshape(1).log_softmax(0).reshape(())
        return LogSoftmaxOp.apply(self, axis=_axis(dim, self.ndim))

    def reshape(self, *shape):
        shape = _shape_arg(shape)
        return ReshapeOp.apply(self, shape=_resolve_shape(shape, self.shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _axis(start_dim, self.ndim), _axis(end_dim, self.ndim)
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        return self.reshape(shape)

    def unsqueeze(self, dim):
        dim = _axis(dim, self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = _axis(dim, self.ndim)
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def transpose(self, dim0, dim1):
        if self.ndim == 0:  # dims 0 / -1 of a 0-d tensor: nothing to swap
            _axis(dim0, 0), _axis(dim1, 0)
            return self.reshape(())
        return TransposeOp.apply(self, dim0=_axis(dim0, self.ndim), dim1=_axis(dim1, self.ndim))

    def permute(self, *dims):
        dims = _shape_arg(dims)
        axes = tuple(_axis(d, self.ndim) for d in dims)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(
                f"permute: dims {tuple(dims)} are not a permutation of the {self.ndim} "
                f"dimensions of a tensor of shape {tuple(self.shape)}")
        return PermuteOp.apply(self, axes=axes)

    def expand(self, *shape):
        shape = _shape_arg(shape)
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
        axis = _axis(dim, self.ndim)
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split: size must be positive, got {split_size_or_sections}")
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
        n = self.shape[_axis(dim, self.ndim)]
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


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _promoted(a, b, a_is_0d, b_is_0d):
    """The dtype of a binary op on dtypes a and b (see `Tensor._pair`)."""
    ca, cb = _CATEGORY.get(a.kind, 2), _CATEGORY.get(b.kind, 2)
    if ca != cb:
        return a if ca > cb else b
    if a_is_0d != b_is_0d:
        return b if a_is_0d else a
    return np.promote_types(a, b)


def _floating(a, b):
    """Operands of true division: integers and booleans divide as the default float dtype
    (PyTorch's `1 / 2` on int tensors is 0.5 in float32)."""
    if a.dtype.kind in "biu":
        return a.to(backend.DEFAULT_FLOAT), b.to(backend.DEFAULT_FLOAT)
    return a, b


def _axis(dim, ndim):
    """A dimension index in [-ndim, ndim) as a non-negative int, or a clear IndexError."""
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(
            f"dimension {dim} out of range for a tensor of {ndim} dimensions "
            f"(expected in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])")
    return int(dim) % max(ndim, 1)


def _axes(dim, ndim):
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        axes = tuple(_axis(d, ndim) for d in dim)
    else:
        axes = (_axis(dim, ndim),)
    # A 0-d tensor accepts dim 0 / -1 (as PyTorch) and has nothing to reduce over.
    return axes if ndim else None


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _resolve_shape(shape, old):
    """Replace a single -1 by the size that keeps the element count; check the count."""
    size = int(np.prod(old))
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got shape {shape}")
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1]))
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {old} into {shape}")
        shape = tuple(size // known if n == -1 else n for n in shape)
    if int(np.prod(shape)) != size:
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {old} ({size} elements) into {shape}")
    return tuple(int(n) for n in shape)


def _normalize_index(index, tensor):
    """Turn Tensor indices into arrays and reject float indices with a clear error."""
    if not isinstance(index, tuple):
        index = (index,)
    out = []
    for i in index:
        if isinstance(i, Tensor):
            if i.device != tensor.device:
                raise RuntimeError(
                    f"indexing a tensor on {tensor.device!r} with an index on {i.device!r}")
            i = i.data
        elif isinstance(i, list):
            i = np.asarray(i)
            if tensor.device != "cpu":
                i = backend.to_device(i, tensor.device)
        if hasattr(i, "dtype") and i.dtype.kind not in "iub":
            raise IndexError(
                f"tensors used as indices must be integer or boolean, got dtype {i.dtype}")
        if isinstance(i, float):
            raise IndexError(f"index {i!r} is a float: expected an int, a slice or an integer tensor")
        out.append(i)
    return tuple(out)


# --- factories --------------------------------------------------------------------------
def _dtype_of(dtype):
    return None if dtype is None else np.dtype(dtype)


def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """A new tensor holding a copy of `data` (a list, scalar, NumPy array or Tensor).

    Python floats become float32 (the default), ints int64 and bools bool; NumPy arrays
    keep their dtype unless `dtype` is given.
    """
    device = backend.normalize_device(device)
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.array_module_for_device(device)
    if dtype is None and not hasattr(data, "dtype"):
        array = np.asarray(data)
        if array.dtype.kind == "f":
            dtype = backend.DEFAULT_FLOAT
        elif array.dtype.kind in "OUS":
            raise TypeError(f"tensor: cannot make a tensor from data of dtype {array.dtype}")
    if device == "cpu" and not isinstance(data, np.ndarray) and hasattr(data, "get"):
        data = data.get()  # CuPy array to the CPU
    array = xp.array(data, dtype=_dtype_of(dtype))
    return Tensor(array, requires_grad=requires_grad)


def _filled(fill, shape, dtype, device, requires_grad):
    device = backend.normalize_device(device)
    xp = backend.array_module_for_device(device)
    dtype = _dtype_of(dtype) or backend.DEFAULT_FLOAT
    shape = _shape_arg(shape)
    return Tensor(getattr(xp, fill)(shape, dtype=dtype), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    return _filled("zeros", shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    return _filled("ones", shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device="cpu", requires_grad=False):
    t = zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)
    t.data[...] = fill_value
    return t


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn(*shape, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from the device's generator (seeded by `manual_seed`)."""
    device = backend.normalize_device(device)
    dtype = _dtype_of(dtype) or backend.DEFAULT_FLOAT
    data = backend.generator(device).standard_normal(_shape_arg(shape), dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False):
    """Uniform samples in [0, 1) from the device's generator."""
    device = backend.normalize_device(device)
    dtype = _dtype_of(dtype) or backend.DEFAULT_FLOAT
    data = backend.generator(device).random(_shape_arg(shape), dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def randint(low, high, size, dtype=None, device="cpu"):
    """Integers uniform in [low, high)."""
    device = backend.normalize_device(device)
    data = backend.generator(device).integers(low, high, size=_shape_arg((size,)))
    return Tensor(data.astype(_dtype_of(dtype) or int64, copy=False))


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """Evenly spaced values in [start, end): int64 for integer arguments, else float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = int64 if is_int else backend.DEFAULT_FLOAT
    xp = backend.array_module_for_device(backend.normalize_device(device))
    return Tensor(xp.arange(start, end, step, dtype=np.dtype(dtype)), requires_grad=requires_grad)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension; the other dimensions must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    axis = _axis(dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise ValueError(
                f"cat: shapes {tuple(tensors[0].shape)} and {tuple(t.shape)} differ outside "
                f"dimension {dim}")
    return CatOp.apply(*tensors, axis=axis)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: expected tensors of one shape, got {tuple(tensors[0].shape)} and "
                f"{tuple(t.shape)}")
    axis = _axis(dim, tensors[0].ndim + 1)
    return StackOp.apply(*tensors, axis=axis)


def where(condition, input, other):
    """`input` where `condition` is True, else `other` (scalars allowed; broadcasting)."""
    condition = condition if isinstance(condition, Tensor) else Tensor(condition)
    if condition.dtype != bool_:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {condition.dtype}")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = Tensor(backend.array_module(condition.data).asarray(
            input, dtype=backend.DEFAULT_FLOAT if isinstance(input, float) else None))
    if not isinstance(input, Tensor):
        input = other._lift(input)
    other = input._lift(other)
    return WhereOp.apply(condition, input, other)


def manual_seed(seed):
    """Seed every random generator tinygpt uses (randn, dropout, sampling, batches)."""
    backend.manual_seed(seed)


from .function import _device_mismatch, no_grad  # noqa: E402,F401  (function.py imports us)
from .ops.elementwise import (AbsOp, AddOp, CastOp, CloneOp, DivOp, ExpOp, LogOp, MaskedFillOp, MulOp,  # noqa: E402
                              NegOp, PowOp, ReluOp, SigmoidOp, SqrtOp, SubOp, TanhOp, ToDeviceOp, WhereOp)
from .ops.reduce import MaxOp, MeanOp, SumOp  # noqa: E402
from .ops.shape import CatOp, ExpandOp, IndexOp, PermuteOp, ReshapeOp, StackOp, TransposeOp  # noqa: E402
from .ops.matmul import MatMulOp  # noqa: E402
from .ops.fused import LogSoftmaxOp, SoftmaxOp  # noqa: E402
