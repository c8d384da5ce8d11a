"""The stand-in's array type and its ufuncs: NumPy arrays behind CuPy 14's rules.

`ndarray` keeps a NumPy array in `_a` and is no `numpy.ndarray`, so a `type(x) is
np.ndarray` branch is never taken for it by accident. It follows CuPy where CuPy differs
from NumPy:

- conversion to NumPy is explicit: `__array__` raises TypeError, and every path from the
  device to the host (`get`, `cupy.asnumpy`, `item`, `tolist`, `float`, `int`, `bool`,
  printing, the count of a boolean mask) goes through `ndarray.get`, as in CuPy, so one
  patch of `ndarray.get` sees them all (`tinygpt.autograd.transfers`);
- there is no `__index__`: a device scalar is not a Python index;
- ufuncs and functions refuse NumPy arrays as operands (`Unsupported type`); Python and
  NumPy scalars are fine;
- reductions and arithmetic on 0-d arrays give 0-d arrays, never NumPy scalars;
- integer array indices wrap around (index n of an axis of size n is index 0), where NumPy
  raises; boolean masks cost a transfer (their count), as on a GPU;
- floating-point errors never warn (a GPU has no such flags).
"""

import threading

import numpy as np

_state = threading.local()          # the fusion in progress (`cupy.fuse`), per thread


class ndarray:
    """A device array of the stand-in (see the module docstring)."""

    __slots__ = ("_a", "_base", "__weakref__")
    __hash__ = None
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in has no raw device memory")
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._base = None

    # --- attributes ---------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    base = property(lambda self: self._base)
    device = property(lambda self: _device())
    data = property(lambda self: MemoryPointer(self._a.ctypes.data))

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def flags(self):
        return Flags(self._a.flags.c_contiguous, self._a.flags.f_contiguous,
                     self._base is None)

    @property
    def T(self):
        return self.transpose()

    @property
    def mT(self):
        return self.swapaxes(-1, -2)

    @property
    def real(self):
        return _view(self._a.real, self)

    @property
    def imag(self):
        return _view(self._a.imag, self)

    # --- to the host: every path goes through get() -------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy on the host: a device-to-host transfer."""
        _refuse_in_fusion("get")
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        _refuse_in_fusion("bool()")
        if self.size == 0:
            return False
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self.get())

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    # --- from the host --------------------------------------------------------------------
    def set(self, arr, stream=None):
        """Copy a NumPy array of this shape and dtype in (host to device)."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: shape or dtype mismatch: {arr.shape} {arr.dtype} into "
                             f"{self.shape} {self.dtype}")
        self._a[...] = arr

    # --- container ------------------------------------------------------------------------
    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, index):
        _refuse_in_fusion("indexing")
        index, advanced = _device_index(index, self.shape)
        result = self._a[index]
        if not advanced and isinstance(result, np.ndarray):
            return _view(result, self)
        return _wrap(result)

    def __setitem__(self, index, value):
        if fusing() and (index is Ellipsis or index == slice(None)):
            from . import _functions    # cupy.fuse writes x[...] = value as a copy
            _functions.UFUNCS.positive(value, out=self)
            return
        _refuse_in_fusion("item assignment other than x[...] = value")
        if isinstance(value, np.ndarray):
            # CuPy refuses assignment from host arrays (it would fill with the object)
            raise TypeError(f"Unsupported type {type(value)}: assign a cupy.ndarray "
                            f"(cupy.asarray(value)) or a scalar")
        index, _ = _device_index(index, self.shape)
        with np.errstate(all="ignore"):
            self._a[index] = _operand(value)

    # --- shape and copies -----------------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        with np.errstate(all="ignore"):
            return _new(self._a.astype(dtype, order=order))

    def copy(self, order="C"):
        return _new(self._a.copy(order=order))

    def fill(self, value):
        _refuse_in_fusion("fill")
        self._a.fill(_operand(value))

    def reshape(self, *shape, order="C"):
        _refuse_in_fusion("reshape")
        return _view(self._a.reshape(*shape, order=order), self)

    def view(self, dtype=None, type=None):
        return _view(self._a if dtype is None else self._a.view(dtype), self)

    def transpose(self, *axes):
        _refuse_in_fusion("transpose")
        return _view(self._a.transpose(*axes), self)

    def swapaxes(self, axis1, axis2):
        _refuse_in_fusion("swapaxes")
        return _view(self._a.swapaxes(axis1, axis2), self)

    def squeeze(self, axis=None):
        return _view(self._a.squeeze(axis), self)

    def ravel(self, order="C"):
        result = self._a.ravel(order)
        return _view(result, self) if np.shares_memory(result, self._a) else _new(result)

    def flatten(self, order="C"):
        return _new(self._a.flatten(order))

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return _view(self._a.diagonal(offset, axis1, axis2), self)

    def take(self, indices, axis=None, out=None):
        indices = _operand(indices)
        size = self.size if axis is None else self.shape[axis]
        return _wrap(self._a.take(_wrapped(np.asarray(indices), size), axis=axis))

    def nonzero(self):
        """The indices of the nonzero elements: their count comes to the host first."""
        int(_new(np.asarray(np.count_nonzero(self._a))))
        return tuple(_new(i) for i in self._a.nonzero())

    def dot(self, b, out=None):
        return _wrap(np.dot(self._a, _operand(b)))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # --- ufuncs and functions applied by NumPy --------------------------------------------
    def __array_ufunc__(self, ufunc_, method, *inputs, **kwargs):
        from . import _functions
        if method != "__call__" or not hasattr(_functions.UFUNCS, ufunc_.__name__):
            return NotImplemented
        return getattr(_functions.UFUNCS, ufunc_.__name__)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        import cupy
        try:
            ours = getattr(cupy, func.__name__)
        except AttributeError:
            return NotImplemented
        return ours(*args, **kwargs)


def _reduction(name):
    """A method as CuPy's: a 0-d array (not a NumPy scalar) for a full reduction."""
    def method(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        if fusing():        # a fused array has no reduction methods: cupy.sum(x, axis)
            raise TypeError(f"cupy.fuse: use cupy.{name}(x, ...), not x.{name}(...) "
                            f"({_state.fusion})")
        options = {} if dtype is None else {"dtype": dtype}
        with np.errstate(all="ignore"):
            result = getattr(self._a, name)(axis=axis, keepdims=keepdims, **options, **kwargs)
        result = _wrap(result)
        if out is not None:
            out._a[...] = result._a
            return out
        return _mark_reduced(result)
    method.__name__ = name
    return method


for _name in ("sum", "prod", "max", "min", "mean", "var", "std", "all", "any", "argmax",
              "argmin", "cumsum", "cumprod"):
    setattr(ndarray, _name, _reduction(_name))


def _simple(name):
    def method(self, *args, **kwargs):
        _refuse_in_fusion(name)
        args = [_operand(a) for a in args]
        with np.errstate(all="ignore"):
            return _wrap(getattr(self._a, name)(*args, **kwargs))
    method.__name__ = name
    return method


for _name in ("argsort", "sort", "argpartition", "partition", "repeat", "clip", "round",
              "conj", "conjugate", "searchsorted", "trace", "ptp", "compress", "choose"):
    setattr(ndarray, _name, _simple(_name))


def _operator(name):
    def method(self, other):
        from . import _functions
        return getattr(_functions.UFUNCS, name)(self, other)
    return method


def _reflected(name):
    def method(self, other):
        from . import _functions
        return getattr(_functions.UFUNCS, name)(other, self)
    return method


def _in_place(name):
    def method(self, other):        # also inside cupy.fuse: the kernel writes the input
        from . import _functions
        getattr(_functions.UFUNCS, name)(self, other, out=self)
        return self
    return method


for _op, _ufunc in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                    ("truediv", "true_divide"), ("floordiv", "floor_divide"),
                    ("mod", "remainder"), ("pow", "power"), ("matmul", "matmul"),
                    ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"),
                    ("lshift", "left_shift"), ("rshift", "right_shift")):
    setattr(ndarray, f"__{_op}__", _operator(_ufunc))
    setattr(ndarray, f"__r{_op}__", _reflected(_ufunc))
    setattr(ndarray, f"__i{_op}__", _in_place(_ufunc))
for _op, _ufunc in (("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                    ("ge", "greater_equal"), ("eq", "equal"), ("ne", "not_equal")):
    setattr(ndarray, f"__{_op}__", _operator(_ufunc))


def _unary(ufunc_name):
    def method(self):
        from . import _functions
        return getattr(_functions.UFUNCS, ufunc_name)(self)
    return method


ndarray.__neg__ = _unary("negative")
ndarray.__pos__ = _unary("positive")
ndarray.__abs__ = _unary("absolute")
ndarray.__invert__ = _unary("invert")
ndarray.__module__ = "cupy"


class Flags:
    """`ndarray.flags`: CuPy's three (there is no `writeable`)."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, c_contiguous, f_contiguous, owndata):
        self.c_contiguous, self.f_contiguous, self.owndata = c_contiguous, f_contiguous, owndata

    def __getitem__(self, name):
        return getattr(self, {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
                              "OWNDATA": "owndata"}[name])


class MemoryPointer:
    """`ndarray.data`: the address of the first element, as CuPy's `ptr`."""

    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr


def _device():
    from .cuda import Device
    return Device(0)


# --- conversions between the stand-in and NumPy -------------------------------------------
def _new(array, base=None):
    out = ndarray.__new__(ndarray)
    out._a = array
    out._base = base
    return out


def _view(array, parent):
    """A view of `parent`'s data: its `base` is parent's base (or parent), as in CuPy."""
    return _new(array, parent._base if parent._base is not None else parent)


def _wrap(result):
    """NumPy results as stand-in arrays (0-d arrays for NumPy scalars); tuples and lists
    element by element; anything else as it is."""
    if isinstance(result, np.ndarray):
        return _new(result)
    if isinstance(result, np.generic):
        return _new(np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list) and result and isinstance(result[0], np.ndarray):
        return [_wrap(r) for r in result]
    return result


def _operand(x):
    """The NumPy data behind a device operand; NumPy arrays are refused as CuPy's kernels
    refuse them, scalars pass."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (list, tuple)):
        return type(x)(_operand(v) for v in x)
    return x


def _wrapped(indices, size):
    """Integer indices wrapped into [0, size) as CuPy's indexing kernels do."""
    if size == 0:
        return indices
    return np.mod(indices, size)


def _device_index(index, shape):
    """A NumPy index for `index` on an array of `shape`, with CuPy's rules: integer arrays
    wrap around, a boolean mask counts its True elements on the host (a transfer), lists
    and NumPy arrays are copied to the device first. Returns (index, advanced)."""
    items = list(index) if isinstance(index, tuple) else [index]
    out, axis, advanced = [], 0, False
    n_axes = sum(1 for i in items if i is not None and i is not Ellipsis) + sum(
        (i.ndim - 1) for i in items if isinstance(i, ndarray) and i.dtype == bool)
    for item in items:
        if isinstance(item, (list, np.ndarray)) or (isinstance(item, np.generic)
                                                    and item.dtype == bool):
            item = _new(np.array(item))                     # host to device
        if item is None:
            out.append(None)
        elif item is Ellipsis:
            out.append(Ellipsis)
            axis += len(shape) - n_axes
        elif isinstance(item, ndarray):
            advanced = True
            if item.dtype == bool:
                int(_new(np.asarray(np.count_nonzero(item._a))))   # CuPy syncs for the count
                out.append(item._a)
                axis += item.ndim
            elif item.dtype.kind in "iu":
                out.append(_wrapped(item._a, shape[axis]) if axis < len(shape) else item._a)
                axis += 1
            else:
                raise IndexError("arrays used as indices must be of integer or boolean type. "
                                 f"(actual: {item.dtype.type})")
        else:
            out.append(item)
            axis += 1
    return tuple(out), advanced


# --- cupy.fuse's rules, checked while a fused function runs -------------------------------
def fusing():
    return getattr(_state, "fusion", None) is not None


def _refuse_in_fusion(what):
    if fusing():
        raise TypeError(f"cupy.fuse cannot compile {what} inside a fused function "
                        f"({_state.fusion}): only ufuncs, operators, where, astype and one "
                        f"reduction")


def _check_fused_reduction(name, keepdims):
    """Inside a fusion: one reduction at most, without keepdims (CuPy's fusion drops it)."""
    fusion = getattr(_state, "fusion", None)
    if fusion is None:
        return
    if keepdims:
        raise TypeError(f"cupy.fuse ignores keepdims: {name}(keepdims=True) in {fusion}")
    if name not in ("sum", "prod", "max", "min", "amax", "amin", "all", "any"):
        raise TypeError(f"cupy.fuse cannot compile the reduction {name} ({fusion})")
    if _state.reduced:
        raise NotImplementedError(f"Multiple reduction is not implemented yet ({fusion})")


def _mark_reduced(result):
    if fusing():
        _state.reduced.add(id(result))
        _state.keep.append(result)
    return result


def check_fused_operands(name, args, result=None):
    """Inside a fusion, before a ufunc: arrays made after the reduction mix only with
    scalars and each other (the post-reduction map sees no input array). After it (with
    `result`): a result made from reduced arrays is itself after the reduction."""
    if not fusing():
        return
    arrays = [a for a in args if isinstance(a, ndarray) and a.ndim > 0]
    reduced = [id(a) in _state.reduced for a in arrays]
    if result is None:
        if any(reduced) and not all(reduced):
            raise ValueError(f"Shape mismatch: an array reduced in {_state.fusion} meets an "
                             f"input array after the reduction")
        if any(reduced) and any(id(a) in _state.parameters for a in args):
            raise ValueError(f"Shape mismatch: a scalar argument of {_state.fusion} is used "
                             f"after the reduction (only constants and the reduced value "
                             f"may be)")
    elif any(reduced) and isinstance(result, ndarray):
        _mark_reduced(result)
