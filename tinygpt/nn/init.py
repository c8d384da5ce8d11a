"""Parameter initialisation, in place, as `torch.nn.init` (floor 3).

Every random draw comes from the CPU generator of `tinygpt.autograd.backend` (seeded by
`tg.manual_seed`), whatever the tensor's device, so a seed gives the same model on the
CPU and on a GPU. The values are drawn in the tensor's float dtype (float32 by default)
and written into its existing array, so a parameter shared by two modules stays shared.
`skip_init(Module, *args)` builds a module whose parameters are left uninitialised, for
weights that are about to be loaded from a file.

Imports: autograd.
"""

import contextlib
import contextvars

from ..autograd import backend

# True while `skip_init` builds a module, in that thread (or task) only.
_skipping = contextvars.ContextVar("tinygpt_skip_init", default=False)


def skip_init(module_cls, *args, **kwargs):
    """`module_cls(*args, **kwargs)` with every fill function of this module doing nothing
    while it is built (PyTorch's `torch.nn.utils.skip_init`): the parameters keep whatever
    their fresh memory held, to be overwritten by loaded weights.

    Filling 124M parameters with random numbers takes seconds (a minute for gpt2-xl), all
    wasted when a file overwrites every one next; untouched memory also costs no RSS until
    it is written. Only this call is affected: the switch is a context variable, so a model
    built meanwhile in another thread is initialised as usual.

    >>> layer = skip_init(Linear, 4096, 4096)       # doctest: +SKIP
    """
    with skipping_init():
        return module_cls(*args, **kwargs)


@contextlib.contextmanager
def skipping_init():
    """Context manager: inside it, in this thread only, every fill function of this module
    does nothing (what `skip_init` does while it builds a module)."""
    token = _skipping.set(True)
    try:
        yield
    finally:
        _skipping.reset(token)


def is_skipping():
    """Whether a `skip_init` (or `skipping_init`) is building modules in this thread now."""
    return _skipping.get()


def _draw_dtype(dtype):
    # NumPy's generators draw float32 or float64 only.
    return dtype if dtype.itemsize >= 4 else backend.DEFAULT_FLOAT


def _write(tensor, values):
    tensor.data[...] = backend.to_device(values, tensor.device)
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2)."""
    if _skipping.get():
        return tensor
    values = backend.generator("cpu").standard_normal(tensor.shape, dtype=_draw_dtype(tensor.dtype))
    if std != 1.0:
        values *= std
    if mean != 0.0:
        values += mean
    return _write(tensor, values)


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    if _skipping.get():
        return tensor
    values = backend.generator("cpu").random(tensor.shape, dtype=_draw_dtype(tensor.dtype))
    values *= b - a
    values += a
    return _write(tensor, values)


def zeros_(tensor):
    if not _skipping.get():
        tensor.data[...] = 0
    return tensor


def ones_(tensor):
    if not _skipping.get():
        tensor.data[...] = 1
    return tensor
