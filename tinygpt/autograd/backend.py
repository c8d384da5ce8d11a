"""The array module behind a tensor: NumPy on the CPU, CuPy on CUDA (floor 1).

This is the only file that names CuPy, and it imports it lazily, on the first use of a
CUDA device, so that tinygpt starts fast and a missing or broken CuPy shows its own
import error where it is actually needed. Every difference between NumPy and CuPy that
the ops care about is one named function here (`scatter_add`, `erf`, `to_numpy`, random
generators, `synchronize`, `fuse`). Imports: numpy and the `erf` and `splitmix` modules
beside this one.
"""

import functools
import warnings

import numpy as np

from .erf import erf_float32, erf_float64
from .splitmix import CounterGenerator

DEFAULT_FLOAT = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# CuPy 14 is the first with `put_along_axis` and NumPy 2's type promotion (NEP 50).
CUPY_MIN_VERSION = (14, 0)

_cupy = None


def _import_cupy():
    """Import CuPy on first use and check its version and that a GPU is there."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which is not installed: pip install "
                "'cupy-cuda12x>=14' (or the wheel matching your CUDA version)") from e
        version = _version_tuple(cupy.__version__)
        if version < CUPY_MIN_VERSION:
            raise RuntimeError(
                f"device 'cuda' needs CuPy >= 14 (put_along_axis, NumPy 2's type promotion), "
                f"found CuPy {cupy.__version__}: pip install -U 'cupy-cuda12x>=14'")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver missing or broken
            raise RuntimeError(f"device 'cuda' is not usable: {e}") from e
        if count == 0:
            raise RuntimeError("device 'cuda' requested but no GPU is visible")
        _cupy = cupy
    return _cupy


def cupy_submodule(name):
    """CuPy's submodule `name` (such as "cuda.nccl", the NCCL library it wraps), imported
    on first use; ImportError when this CuPy lacks it."""
    import importlib
    return importlib.import_module(f"{_import_cupy().__name__}.{name}")


def _version_tuple(text):
    """'14.2.0' -> (14, 2); '15.0.0a1' -> (15, 0)."""
    parts = []
    for part in str(text).split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits) if part[:1].isdigit() else 0)
    return tuple(parts)


def cuda_available():
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
        return True
    except RuntimeError:
        return False


def normalize_device(device):
    """'cpu', 'cuda' or 'cuda:N' (only device 0 is used) -> 'cpu' or 'cuda'."""
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def array_module_for_device(device):
    """The array module (numpy or cupy) of a device name."""
    if device == "cpu":
        return np
    return _import_cupy()


def array_module(array):
    """The array module of an array: the Chainer/DeZero `xp` idiom."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def is_array(x):
    """True for a NumPy array or an array of CuPy (not for a NumPy or Python scalar)."""
    return isinstance(x, np.ndarray) or (_cupy is not None and isinstance(x, _cupy.ndarray))


def device_of(array):
    """'cpu' for a NumPy array, 'cuda' for a CuPy one."""
    return "cpu" if isinstance(array, (np.ndarray, np.generic)) else "cuda"


def to_numpy(array):
    """A NumPy copy of the array, from the GPU when it lives there."""
    if isinstance(array, np.ndarray):
        return array.copy()
    if isinstance(array, np.generic):
        return np.asarray(array)
    return _cupy.asnumpy(array)


def to_device(array, device):
    """The array on `device` ('cpu' or 'cuda'); the same object when it is there already."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return _cupy.asnumpy(array)
    return _import_cupy().asarray(array)


def scatter_add(target, indices, values):
    """target[indices] += values, accumulating repeated indices (unlike `+=`)."""
    if isinstance(target, np.ndarray):
        np.add.at(target, indices, values)
    else:
        import cupyx
        cupyx.scatter_add(target, indices, values)


def erf(x, out=None):
    """The error function, elementwise, in the dtype of `x`: to float64 precision for
    float64 (Cody), to float32 precision for float32 and narrower (Eigen's rational form).
    With `out` (an array of x's shape and dtype) the result is written there."""
    if isinstance(x, (np.ndarray, np.generic)):  # arithmetic on 0-d arrays gives np.generic
        if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
            return erf_float32(np.asarray(x), out)
        result = erf_float64(x)
    else:
        import cupyx.scipy.special
        result = cupyx.scipy.special.erf(x)
    if out is None:
        return result
    out[...] = result
    return out


# Random numbers: one generator per device, reseeded by `manual_seed`. The CPU's is
# NumPy's PCG64; the GPU's is a counter-based SplitMix64 (splitmix.py), whose state is two
# integers, so checkpoints can save it and resume its stream exactly.
_generators = {}
_seed = None
CUDA_STREAM = 2             # the spawn key that sets the GPU's stream apart from the CPU's


def manual_seed(seed):
    """Seed the random generators of every device."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device):
    """The random generator of a device: NumPy's Generator on the CPU, a
    `splitmix.CounterGenerator` on CUDA (created without touching the GPU, so its state
    can be read or set on any machine)."""
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            key = np.random.SeedSequence(_seed, spawn_key=(CUDA_STREAM,)).generate_state(
                1, np.uint64)[0]
            gen = CounterGenerator(int(key), lambda: array_module_for_device("cuda"), fuse)
        _generators[device] = gen
    return gen


def get_rng_state(device="cpu"):
    """The state of a device's generator, a plain dict of JSON types (saved in
    checkpoints): NumPy's bit-generator state on the CPU, {"bit_generator":
    "SplitMix64", "key", "position"} on CUDA."""
    gen = generator(normalize_device(device))
    return gen.bit_generator.state if device == "cpu" else gen.state


def set_rng_state(state, device="cpu"):
    """Restore a device's generator from `get_rng_state(device)`'s dict."""
    gen = generator(normalize_device(device))
    if device == "cpu":
        gen.bit_generator.state = state
    else:
        gen.state = state


def synchronize(device):
    """Wait for the device's queued work (for timing); nothing to do on the CPU."""
    if device != "cpu":
        _import_cupy().cuda.Device().synchronize()


# --- fused kernels -----------------------------------------------------------------------
class FusionFallbackWarning(RuntimeWarning):
    """A fused GPU kernel failed to build and runs as separate array operations instead:
    the results stay right, the speed does not."""


# name -> the error of each fused kernel that fell back (the GPU check reports them)
fuse_fallbacks = {}


def fuse(function, name=None):
    """`function(xp, *args)` as one GPU kernel: on CuPy arrays it runs through
    `cupy.fuse` (compiled once per dtype and rank of the arguments); on NumPy arrays it
    is plain array code with xp = numpy. The function may use elementwise ufuncs of `xp`,
    operators, `xp.where`, `.astype` and at most one reduction, whose result meets only
    scalars afterwards (what CuPy's fusion compiles).

    Should the fusion fail on a GPU, the same function runs unfused with a
    FusionFallbackWarning and the error is kept in `fuse_fallbacks[name]`."""
    return _Fused(function, name or function.__name__)


class _Fused:
    __slots__ = ("function", "name", "gpu_function", "__weakref__")

    def __init__(self, function, name):
        self.function, self.name, self.gpu_function = function, name, None

    def __call__(self, *args):
        if _cupy is None or not any(isinstance(a, _cupy.ndarray) for a in args):
            return self.function(np, *args)
        if self.name in fuse_fallbacks:
            return self.function(_cupy, *args)
        if self.gpu_function is None:
            self.gpu_function = _cupy.fuse(kernel_name=self.name)(
                functools.partial(self.function, _cupy))
        try:
            return self.gpu_function(*args)
        except Exception as error:      # a fusion CuPy cannot build: run it unfused
            result = self.function(_cupy, *args)      # raises for a real argument error
            fuse_fallbacks[self.name] = f"{type(error).__name__}: {error}"
            warnings.warn(f"fused kernel {self.name} runs unfused: {error}",
                          FusionFallbackWarning, stacklevel=2)
            return result
