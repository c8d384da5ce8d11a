"""Parameter initialisation, in place, as `torch.nn.init` (floor 3).

Every random draw comes from the CPU generator of `tinygpt.autograd.backend` (seeded by
`tg.manual_seed`), whatever the tensor's device, so a seed gives the same model on the
CPU and on a GPU. The values are drawn in the tensor's float dtype (float32 by default)
and written into its existing array, so a parameter shared by two modules stays shared.
Imports: autograd.
"""

from ..autograd import backend


def _draw_dtype(dtype):
    # NumPy's generators draw float32 or float64 only.
    return dtype if dtype.itemsize >= 4 else backend.DEFAULT_FLOAT


def _write(tensor, values):
    tensor.data[...] = backend.to_device(values, tensor.device)
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2)."""
    values = backend.generator("cpu").standard_normal(tensor.shape, dtype=_draw_dtype(tensor.dtype))
    if std != 1.0:
        values *= std
    if mean != 0.0:
        values += mean
    return _write(tensor, values)


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    values = backend.generator("cpu").random(tensor.shape, dtype=_draw_dtype(tensor.dtype))
    values *= b - a
    values += a
    return _write(tensor, values)


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor


def ones_(tensor):
    tensor.data[...] = 1
    return tensor
