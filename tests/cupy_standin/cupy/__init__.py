"""A strict stand-in for CuPy 14, on NumPy, for testing tinygpt's CUDA path without a GPU.

The test suite puts this package on `sys.path` when no usable CuPy (CuPy with a GPU) is
there (tests/conftest.py), so `import cupy` in tinygpt's backend finds it and every
`device="cuda"` test runs; with a real CuPy and a GPU, the real one is imported instead and
the same tests run on the GPU, unchanged.

It is strict where CuPy differs from NumPy, so that code which would break on a GPU breaks
here too (details in `_core`):

- `cupy.ndarray` is not a `numpy.ndarray`, and `__array__` raises TypeError: nothing turns
  into a NumPy array without an explicit `.get()` / `cupy.asnumpy`;
- only the top-level names of CuPy 14.2 exist (`_names.py`): `cupy.errstate` or any other
  NumPy-only name raises AttributeError;
- ufuncs and functions refuse NumPy arrays as operands (CuPy's "Unsupported type");
- reductions give 0-d arrays; integer array indices wrap around; there is no `__index__`;
- every device-to-host path goes through `ndarray.get` (as in CuPy), which
  `tinygpt.autograd.transfers` counts by source line; boolean-mask indexing and `nonzero`
  transfer their count, as on a GPU;
- `cupy.fuse` runs the function as plain array code under the fusion compiler's rules
  (ufuncs, operators, `where`, `astype`, one reduction that meets no input array after it);
- `cupy.random.default_rng`, `cupyx.scatter_add`, `cupyx.scipy.special.erf`,
  `cupy.cuda.Device().synchronize()`, `cupy.cuda.runtime.getDeviceCount()` (1 device),
  `cupy.cuda.nccl` for a communicator of one rank (its arguments checked).

What it cannot catch: the numerics of real kernels (float32 sums in another order, fused
multiply-adds, CUDA's erf to 2 ulp instead of this one's correctly rounded value), whether a
fused function compiles as CUDA C and how fast it runs, `ElementwiseKernel` /
`ReductionKernel` / `RawKernel` code (they raise NotImplementedError when called), streams
and asynchrony (everything here is synchronous, so no race shows), the memory pool and
running out of GPU memory, float16 arithmetic as GPUs do it, transfers that bypass
`ndarray.get` (CUDA library calls, `cupy.cuda.runtime.memcpy`), and the speed of
anything. The GPU check (`python -m bench gpu`) covers those on a real GPU.
"""

import numpy as _np

from . import _core, _functions, _util  # noqa: F401
from ._core import ndarray  # noqa: F401
from ._functions import (ElementwiseKernel, RawKernel, RawModule, ReductionKernel,  # noqa: F401
                         array, asarray, asnumpy, fuse, get_array_module,
                         get_default_memory_pool, get_default_pinned_memory_pool,
                         is_available, nonzero, put_along_axis, take, take_along_axis, ufunc,
                         where)
from ._names import NAMES
from . import cuda, random  # noqa: F401,E402

__version__ = "14.2.0"

_cache = {}


def __getattr__(name):
    """CuPy's other top-level names, from NumPy behind the stand-in's rules (functions,
    ufuncs) or NumPy's own objects (dtypes, constants, exceptions)."""
    if name in _cache:
        return _cache[name]
    if name not in NAMES:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (CuPy 14 has no such "
                             f"name; NumPy does)" if hasattr(_np, name) else
                             f"module 'cupy' has no attribute {name!r}")
    if hasattr(_functions.UFUNCS, name):
        value = getattr(_functions.UFUNCS, name)
    elif name in ("bool",):
        value = _np.bool_
    elif name in ("AxisError", "ComplexWarning", "ModuleDeprecationWarning", "RankWarning",
                  "TooHardError", "VisibleDeprecationWarning"):
        value = getattr(_np.exceptions, name)
    elif not hasattr(_np, name):
        raise AttributeError(f"the CuPy stand-in does not implement cupy.{name}")
    else:
        value = getattr(_np, name)
        if callable(value) and not isinstance(value, type) and name not in (
                "finfo", "iinfo", "dtype"):
            value = _functions._numpy_function(name, value)
    _cache[name] = value
    return value
