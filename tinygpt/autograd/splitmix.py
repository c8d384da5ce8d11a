"""The GPU's random numbers: SplitMix64 as a function of (key, position) (floor 1).

Number i of the stream with key k is

    z = k + (i + 1) * G    (mod 2^64, G = 0x9E3779B97F4A7C15, the golden ratio in 64 bits)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    out = z ^ (z >> 31)

which is Vigna's SplitMix64 generator (the one Java's SplittableRandom uses; it passes
BigCrush) read at position i instead of stepped to it. So a draw of n numbers is one
elementwise kernel over n positions, a kernel can regenerate any part of the stream, and
the generator's whole state is two integers: the key and how many numbers were drawn. A
checkpoint saves those and a resumed run draws exactly what the run that never stopped
would have, on any GPU (CuPy's own generator keeps one cuRAND state per GPU thread, device
memory whose size depends on the GPU model).

Uniforms take the top 53 bits (float64) or 24 bits (float32) of `out`, so every value is
a multiple of 2^-53 (2^-24) in [0, 1); normals come from two uniforms each (Box-Muller).
Every kernel here is written with operators only and runs as one fused GPU kernel
(`fuse` is the backend's), as plain NumPy code, or on the CuPy stand-in alike.
Imports: numpy only.
"""

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S11, _S40 = np.uint64(11), np.uint64(40)


def mix(z):
    """SplitMix64's output function of a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _bits(rows, cols, base, row_step):
    """mix(base + rows * row_step + cols * G): the stream at a grid of positions."""
    return mix(base + rows * row_step + cols * np.uint64(GOLDEN))


def uniform64(rows, cols, base, row_step):
    return (_bits(rows, cols, base, row_step) >> _S11).astype(np.float64) * (2.0 ** -53)


def uniform32(rows, cols, base, row_step):
    return ((_bits(rows, cols, base, row_step) >> _S40).astype(np.float32)
            * np.float32(2.0 ** -24))


def normal64(xp, rows, cols, base, row_step, odd_base):
    """Box-Muller: u1 at the even positions (from `base`), u2 at the odd ones (from
    odd_base = base + G): sqrt(-2 log(1 - u1)) cos(2 pi u2), 1 - u1 in (0, 1]."""
    u1 = (_bits(rows, cols, base, row_step) >> _S11).astype(np.float64) * (2.0 ** -53)
    u2 = (_bits(rows, cols, odd_base, row_step) >> _S11).astype(np.float64) * (2.0 ** -53)
    return xp.sqrt(-2.0 * xp.log(1.0 - u1)) * xp.cos((2.0 * np.pi) * u2)


def normal32(xp, rows, cols, base, row_step, odd_base):
    return normal64(xp, rows, cols, base, row_step, odd_base).astype(np.float32)


class CounterGenerator:
    """A generator with NumPy's Generator methods (`random`, `standard_normal`, `integers`)
    that draws from the SplitMix64 stream of `key` (see the module docstring), on the
    arrays of the module `xp()` returns, each kernel run through `fuse`.

    `state` is {"bit_generator": "SplitMix64", "key": k, "position": i}: a plain dict of
    ints, restored by assigning it back.
    """

    def __init__(self, key, xp, fuse):
        self.key, self.position = int(key) & _MASK, 0
        self._xp, self._gpu_fns = xp, {
            "uniform64": fuse(lambda xp, *a: uniform64(*a), "splitmix_uniform64"),
            "uniform32": fuse(lambda xp, *a: uniform32(*a), "splitmix_uniform32"),
            "normal64": fuse(normal64, "splitmix_normal64"),
            "normal32": fuse(normal32, "splitmix_normal32")}

    @property
    def state(self):
        return {"bit_generator": "SplitMix64", "key": self.key, "position": self.position}

    @state.setter
    def state(self, state):
        if not isinstance(state, dict) or state.get("bit_generator") != "SplitMix64" or not all(
                isinstance(state.get(k), int) and 0 <= state[k] <= _MASK
                for k in ("key", "position")):
            raise ValueError(f"not a SplitMix64 generator state: expected a dict with "
                             f"'bit_generator': 'SplitMix64' and integer 'key' and "
                             f"'position' in [0, 2^64), got {state!r:.200}")
        self.key, self.position = state["key"], state["position"]

    def _grid(self, shape, stride=1):
        """(rows (R, 1), cols (1, K)) uint64 index arrays covering prod(shape) positions
        in C order, and the draw's (base, row_step); advances the position."""
        xp = self._xp()
        n = int(np.prod(shape))
        k = shape[-1] if len(shape) and shape[-1] else 1
        base = (self.key + (self.position + 1) * GOLDEN) & _MASK
        rows = xp.arange(n // k, dtype=np.uint64).reshape(-1, 1)
        cols = xp.arange(k, dtype=np.uint64).reshape(1, -1) * np.uint64(stride)
        row_step = np.uint64((k * stride * GOLDEN) & _MASK)
        self.position = (self.position + stride * n) & _MASK
        return rows, cols, np.uint64(base), row_step

    def random(self, size=None, dtype=np.float64):
        """Uniforms in [0, 1) of `size` (a shape) in float64 or float32."""
        shape = _shape(size)
        gpu_fn = self._gpu_fns["uniform32" if np.dtype(dtype) == np.float32 else "uniform64"]
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"random: dtype must be float32 or float64, got {np.dtype(dtype)}")
        return gpu_fn(*self._grid(shape)).reshape(shape)

    def standard_normal(self, size=None, dtype=np.float64):
        """Standard normal samples of `size`, two stream positions each."""
        shape = _shape(size)
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"standard_normal: dtype must be float32 or float64, got "
                            f"{np.dtype(dtype)}")
        gpu_fn = self._gpu_fns["normal32" if np.dtype(dtype) == np.float32 else "normal64"]
        rows, cols, base, row_step = self._grid(shape, stride=2)
        odd_base = np.uint64((int(base) + GOLDEN) & _MASK)
        return gpu_fn(rows, cols, base, row_step, odd_base).reshape(shape)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        """Integers uniform in [low, high) (in [0, low) without high): low plus the
        floor of (high - low) times a float64 uniform, whose bias is below
        (high - low) / 2^53."""
        if high is None:
            low, high = 0, low
        if high <= low:
            raise ValueError(f"integers: low >= high ({low} >= {high})")
        u = self.random(size, np.float64)
        return (u * float(high - low)).astype(np.int64) + np.int64(low)


def _shape(size):
    if size is None:
        return ()
    return tuple(size) if isinstance(size, (tuple, list)) else (int(size),)
