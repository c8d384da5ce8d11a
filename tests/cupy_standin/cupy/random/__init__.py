"""cupy.random on the stand-in: `default_rng` and its Generator (NumPy's PCG64 underneath,
so streams differ from a GPU's XORWOW; the methods and their signatures are CuPy's)."""

import numpy as np

from .._core import _new, ndarray


class Generator:
    """cupy.random.Generator: draws straight into device arrays."""

    def __init__(self, bit_generator):
        self.bit_generator = bit_generator
        self._rng = np.random.Generator(bit_generator)

    def random(self, size=None, dtype=np.float64, out=None):
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"Unsupported dtype {np.dtype(dtype).name} for random")
        return self._fill(self._rng.random(size if size is not None else (), dtype=dtype), out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        if np.dtype(dtype).char not in "fd":
            raise TypeError(f"Unsupported dtype {np.dtype(dtype).name} for standard_normal")
        return self._fill(self._rng.standard_normal(size if size is not None else (),
                                                    dtype=dtype), out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return _new(self._rng.uniform(low, high, size if size is not None else ()).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return _new(np.asarray(self._rng.integers(low, high, size if size is not None else (),
                                                  dtype=dtype, endpoint=endpoint)))

    @staticmethod
    def _fill(values, out):
        if out is None:
            return _new(np.asarray(values))
        if not isinstance(out, ndarray):
            raise TypeError(f"out must be a cupy.ndarray, got {type(out)}")
        out._a[...] = values
        return out


def default_rng(seed=None):
    """A Generator seeded by `seed` (an int, a SeedSequence, None for fresh entropy)."""
    if isinstance(seed, Generator):
        return seed
    return Generator(np.random.PCG64(seed))
