"""cupy.fuse on the stand-in: the fused function runs as plain array code, checked against
the rules of CuPy's fusion compiler (see `_core`): what fails here would not compile on a
GPU. It cannot show that a kernel which passes here compiles (CUDA C's own errors) or is
fast: the GPU check does."""

import numpy as np

from . import _core
from ._core import ndarray

# CuPy's fusion takes these arguments (and None); anything else is refused.
SCALARS = (bool, int, float, complex, np.generic)


class Fusion:
    def __init__(self, func, kernel_name=None):
        self.func = func
        self.name = kernel_name or func.__name__
        self.__name__ = self.name
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self):
        return f"<Fusion '{self.name}'>"

    def __call__(self, *args):
        if _core.fusing():                              # a fused function inside another
            return self.func(*args)
        if not any(isinstance(a, ndarray) for a in args):
            return self.func(*args)                     # CuPy: no device array, plain call
        for a in args:
            if a is not None and not isinstance(a, (ndarray,) + SCALARS):
                raise TypeError(f"Invalid argument type for '{self.name}': "
                                f"({', '.join(repr(type(x)) for x in args)})")
        _core._state.fusion, _core._state.reduced, _core._state.keep = self.name, set(), []
        # Scalar arguments are parameters of the map before the reduction (their objects,
        # by identity: a constant written in the function is another object).
        _core._state.parameters = {id(a) for a in args if isinstance(a, SCALARS)}
        try:
            result = self.func(*args)
        finally:
            _core._state.fusion = None
            _core._state.reduced, _core._state.keep = set(), []
            _core._state.parameters = set()
        outputs = result if isinstance(result, tuple) else (result,)
        for out in outputs:
            if out is not None and not isinstance(out, ndarray) and not isinstance(out, SCALARS):
                raise TypeError(f"Fusion function can't return {type(out)}")
        if any(o is a for o in outputs for a in args if isinstance(a, ndarray)):
            # A fused kernel writes fresh outputs: returning an input would alias it.
            outputs = tuple(o.copy() if any(o is a for a in args) else o for o in outputs)
            result = outputs if isinstance(result, tuple) else outputs[0]
        return result
