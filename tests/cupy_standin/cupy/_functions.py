"""The stand-in's functions: each name of CuPy 14's top level, on NumPy behind the rules of
`_core` (operands on the device, 0-d results, wrapped integer indices), plus the few whose
CuPy behaviour differs from NumPy's and is written out here."""

import math
import types

import numpy as np

from . import _core
from ._core import _new, _operand, _wrap, _wrapped, ndarray

# CuPy's creation functions take host data (a host-to-device copy); every other function
# takes device arrays and scalars only.
FROM_HOST = {"array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray",
             "asarray_chkfinite", "frombuffer", "fromiter", "fromfunction", "fromstring",
             "fromfile", "loadtxt", "genfromtxt", "load"}
# Functions of shapes and dtypes (no array data).
NOT_DATA = {"dtype", "result_type", "promote_types", "can_cast", "finfo", "iinfo",
            "broadcast_shapes", "isscalar", "issubdtype", "isdtype", "min_scalar_type",
            "mintypecode", "common_type", "typename", "ndim", "shape", "size"}
# What a fused function may call besides ufuncs (cupy.fuse compiles these).
FUSABLE = {"where", "sum", "prod", "amax", "amin", "max", "min", "all", "any", "clip", "copy"}
REDUCTIONS = {"sum", "prod", "amax", "amin", "max", "min", "all", "any"}


class ufunc:
    """A CuPy ufunc over NumPy's: operands on the device or scalars, results on the device."""

    def __init__(self, numpy_ufunc, name=None):
        self._ufunc = numpy_ufunc
        self.__name__ = name or numpy_ufunc.__name__
        self.nin, self.nout = numpy_ufunc.nin, numpy_ufunc.nout

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind", **kwargs):
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        operands = [_operand(a) for a in args]
        _core.check_fused_operands(self.__name__, args)
        options = {"casting": casting}
        if dtype is not None:
            options["dtype"] = dtype
        if out is not None:
            if not isinstance(out, ndarray):
                raise TypeError(f"Output arrays must be cupy.ndarray, got {type(out)}")
            options["out"] = out._a
        with np.errstate(all="ignore"):
            result = self._ufunc(*operands, **options)
        result = out if out is not None else _wrap(result)
        _core.check_fused_operands(self.__name__, args, result)
        return result


def _numpy_function(name, function):
    """A CuPy function over NumPy's `function` (see the module docstring)."""
    from_host = name in FROM_HOST

    def call(*args, **kwargs):
        if _core.fusing() and name not in FUSABLE:
            _core._refuse_in_fusion(f"cupy.{name}")
        if _core.fusing() and name in REDUCTIONS:
            _core._check_fused_reduction(name, kwargs.get("keepdims", False))
        if from_host:
            args = [a._a if isinstance(a, ndarray) else a for a in args]
        elif name not in NOT_DATA:
            args = [_operand(a) for a in args]
            kwargs = {k: _operand(v) for k, v in kwargs.items()}
        else:
            args = [a._a if isinstance(a, ndarray) else a for a in args]
        if "out" in kwargs and kwargs["out"] is not None:
            raise NotImplementedError(f"the stand-in's cupy.{name} has no out=")
        with np.errstate(all="ignore"):
            result = function(*args, **kwargs)
        if name in NOT_DATA:
            return result
        return _core._mark_reduced(_wrap(result)) if name in REDUCTIONS else _wrap(result)

    call.__name__ = name
    call.__qualname__ = name
    return call


def _build_ufuncs():
    table = types.SimpleNamespace()
    for name in dir(np):
        value = getattr(np, name)
        if isinstance(value, np.ufunc):
            setattr(table, name, ufunc(value, name))
    return table


UFUNCS = _build_ufuncs()


# --- functions whose CuPy behaviour is written out -----------------------------------------
def asarray(a, dtype=None, order=None, *, blocking=False):
    """The same array when it is on the device already (cast if `dtype` asks); host data
    is copied to the device."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return _new(np.array(a, dtype=dtype, order=order or "K"))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A copy of `obj` on the device (host data is copied over)."""
    if isinstance(obj, ndarray):
        if copy is False and (dtype is None or np.dtype(dtype) == obj.dtype):
            return obj
        result = np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin)
        return _new(result)
    if isinstance(obj, (list, tuple)):
        obj = [o.get() if isinstance(o, ndarray) else o for o in obj]
    return _new(np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A NumPy array on the host: a device-to-host transfer for device arrays."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def get_array_module(*args):
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else np


def where(condition, x=None, y=None):
    if x is None and y is None:
        return nonzero(condition)
    if (x is None) != (y is None):
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    operands = [_operand(a) for a in (condition, x, y)]
    _core.check_fused_operands("where", (condition, x, y))
    result = _wrap(np.where(*operands))
    _core.check_fused_operands("where", (condition, x, y), result)
    return result


def nonzero(a):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    return a.nonzero()


def take(a, indices, axis=None, out=None):
    return a.take(indices, axis=axis, out=out)


def take_along_axis(a, indices, axis):
    indices = _operand(indices)
    size = a.shape[axis] if axis is not None else a.size
    return _wrap(np.take_along_axis(_operand(a), _wrapped(indices, size), axis))


def put_along_axis(a, indices, values, axis):
    indices = _operand(indices)
    np.put_along_axis(_operand(a), _wrapped(indices, a.shape[axis]), _operand(values), axis)


def fuse(*args, **kwargs):
    """cupy.fuse: the decorated function runs as plain array code on the stand-in's arrays,
    under cupy.fuse's rules (`_core.check_fused_operands` and friends): only ufuncs,
    operators, `where`, `astype` and one reduction whose result meets no input array.
    Arguments are device arrays or scalars; NumPy arrays are refused."""
    from ._fusion import Fusion

    if len(args) == 1 and not kwargs and callable(args[0]):
        return Fusion(args[0])
    return lambda f: Fusion(f, *args, **kwargs)


def _gpu_only_kernel(kind):
    class Kernel:
        """Accepted for its signature; a call needs a GPU (the stand-in runs no CUDA C)."""

        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

        def __call__(self, *args, **kwargs):
            raise NotImplementedError(
                f"cupy.{kind}: the CuPy stand-in cannot run CUDA source code; this kernel "
                f"is tested on a GPU")

        def get_function(self, name):
            return self

    Kernel.__name__ = Kernel.__qualname__ = kind
    return Kernel


ElementwiseKernel = _gpu_only_kernel("ElementwiseKernel")
ReductionKernel = _gpu_only_kernel("ReductionKernel")
RawKernel = _gpu_only_kernel("RawKernel")
RawModule = _gpu_only_kernel("RawModule")


class MemoryPool:
    """The default memory pool's counters: the stand-in allocates through NumPy and reports
    zeros."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


_POOL = MemoryPool()


def get_default_memory_pool():
    return _POOL


def get_default_pinned_memory_pool():
    return _POOL


def is_available():
    return True


def _erf_float64(x):
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)


def erf_ufunc():
    """cupyx.scipy.special.erf: math.erf to float64 precision, rounded once to float32 for
    float32 input (CUDA's erff is within 2 ulp): an oracle independent of tinygpt's own
    erf."""
    class Erf(ufunc):
        def __init__(self):
            self.__name__, self.nin, self.nout = "erf", 1, 1

        def __call__(self, x, out=None, dtype=None, **kwargs):
            data = _operand(x)
            _core.check_fused_operands("erf", (x,))
            dtype = np.result_type(data, np.float32) if dtype is None else np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"erf: unsupported dtype {dtype}")
            result = _erf_float64(np.asarray(data, dtype=np.float64)).astype(dtype)
            if out is not None:
                out._a[...] = result
                return out
            result = _new(result)
            _core.check_fused_operands("erf", (x,), result)
            return result
    return Erf()
