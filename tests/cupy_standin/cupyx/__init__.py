"""cupyx on the stand-in: `scatter_add` (integer indices wrap, as CuPy's do) and
`cupyx.scipy.special.erf`."""

import numpy as np

from cupy._core import _device_index, _operand, ndarray

from . import scipy  # noqa: F401


def scatter_add(a, slices, value):
    """a[slices] += value, adding repeated indices up (unlike `+=`)."""
    if not isinstance(a, ndarray):
        raise TypeError(f"scatter_add: a must be a cupy.ndarray, got {type(a)}")
    index, _ = _device_index(slices, a.shape)
    np.add.at(a._a, index, _operand(value))
