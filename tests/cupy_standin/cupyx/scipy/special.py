"""cupyx.scipy.special on the stand-in: `erf`, a ufunc (usable inside cupy.fuse)."""

from cupy._functions import erf_ufunc

erf = erf_ufunc()
