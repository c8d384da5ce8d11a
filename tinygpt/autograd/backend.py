"""The array module behind a tensor: NumPy on the CPU, CuPy on CUDA (floor 1).

This is the only file that names CuPy, and it imports it lazily, on the first use of a
CUDA device, so that tinygpt starts fast and a missing or broken CuPy shows its own
import error where it is actually needed. Every difference between NumPy and CuPy that
the ops care about is one named function here (`scatter_add`, `erf`, `to_numpy`, random
generators, `synchronize`). Imports: numpy and the `erf` module beside this one.
"""

import numpy as np

from .erf import erf_float32, erf_float64

DEFAULT_FLOAT = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_cupy = None


def _import_cupy():
    """Import CuPy on first use and check that a GPU is there."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which is not installed: pip install cupy-cuda12x "
                "(or the wheel matching your CUDA version)") from e
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver missing or broken
            raise RuntimeError(f"device 'cuda' is not usable: {e}") from e
        if count == 0:
            raise RuntimeError("device 'cuda' requested but no GPU is visible")
        _cupy = cupy
    return _cupy


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


def get_array_module(device):
    """The array module (numpy or cupy) of a device name."""
    if device == "cpu":
        return np
    return _import_cupy()


def array_module(array):
    """The array module of an array: the Chainer/DeZero `xp` idiom."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


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


# Random numbers: one generator per device, reseeded by `manual_seed`.
_generators = {}
_seed = None


def manual_seed(seed):
    """Seed the random generators of every device."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device):
    """The random generator of a device (NumPy's Generator, or CuPy's)."""
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            gen = _import_cupy().random.default_rng(_seed)
        _generators[device] = gen
    return gen


def get_rng_state():
    """The CPU generator's state, a plain dict (saved in checkpoints)."""
    return generator("cpu").bit_generator.state


def set_rng_state(state):
    """Restore the CPU generator from `get_rng_state()`'s dict."""
    generator("cpu").bit_generator.state = state


def synchronize(device):
    """Wait for the device's queued work (for timing); nothing to do on the CPU."""
    if device != "cpu":
        _import_cupy().cuda.Device().synchronize()
