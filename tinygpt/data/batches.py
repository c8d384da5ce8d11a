"""Token arrays, the train/validation split and random (input, target) batches (floor 4, data).

A language model learns to predict each next token, so one training example is a window
of T + 1 consecutive tokens starting at i: the inputs are its first T tokens and the
targets its last T, the same tokens shifted by one (T = block_size):

    x = data[i     : i + T]          (B, T)
    y = data[i + 1 : i + T + 1]      (B, T)    y[b, t] is the token after x[b, t]

Start indices are drawn uniformly from 0 .. len(data) - T - 1, both ends included, so every
window of the text (and so every token as a target) can be drawn.

Imports: autograd (backend, Tensor), validate, numpy.
"""

import numpy as np

from .. import validate
from ..autograd import backend
from ..autograd.tensor import Tensor


def as_token_array(ids):
    """`ids` (a list, NumPy array or Tensor of integers) as a 1-D NumPy integer array."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"token data must be 1-D, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"token data must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64) if array.dtype.kind not in "iu" else array


def check_token_ids(data, vocab_size):
    """Raise a `validate.TokenIdError` (a ValueError) naming the first id of the host array
    `data` outside [0, vocab_size), its position and the vocabulary size."""
    validate.token_ids(data, vocab_size, name="the data")


def train_val_split(data, frac=0.9):
    """The first `frac` of `data` for training, the rest for validation (nanoGPT's split:
    the validation text is a contiguous tail, unseen in training).

    >>> train, val = train_val_split(np.arange(10))
    >>> len(train), len(val)
    (9, 1)
    """
    frac = float(frac)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"the train fraction must be in (0, 1), got {frac}")
    data = as_token_array(data)
    n = int(frac * len(data))
    if n == 0:  # (n < len(data) always: int() rounds frac * len(data) < len(data) down)
        raise ValueError(f"{len(data)} tokens split at {frac} leave an empty training part")
    return data[:n], data[n:]


def _check_sizes(n_tokens, block_size, batch_size):
    validate.positive_integer("block_size", block_size)
    validate.positive_integer("batch_size", batch_size)
    if n_tokens < block_size + 1:
        raise ValueError(
            f"{n_tokens} tokens are too few for block_size {block_size}: one (input, target) "
            f"window needs block_size + 1 = {block_size + 1} tokens")


def _gather(data, starts, block_size, device):
    """x = data[i:i+T], y = data[i+1:i+T+1] for each start i, as int64 Tensors on
    `device`. `data` already lives on `device`; only the B start indices travel."""
    xp = backend.array_module(data)
    starts = xp.asarray(starts)
    positions = starts[:, None] + xp.arange(block_size)          # (B, T)
    x = data[positions].astype(np.int64, copy=False)
    y = data[positions + 1].astype(np.int64, copy=False)
    return Tensor(x), Tensor(y)


def get_batch(data, block_size, batch_size, device="cpu", rng=None):
    """One random batch (x, y) of int64 Tensors of shape (batch_size, block_size).

    rng: a NumPy Generator; by default tinygpt's CPU generator (seeded by `manual_seed`).
    For repeated draws, prefer `BatchSampler`, which keeps the data on the device and has
    its own saveable random state.
    """
    data = as_token_array(data)
    _check_sizes(len(data), block_size, batch_size)
    rng = backend.generator("cpu") if rng is None else rng
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    device = backend.normalize_device(device)
    return _gather(backend.to_device(data, device), starts, block_size, device)


BATCH_STREAM = 1            # the spawn key that sets the batch stream apart


class BatchSampler:
    """Draws random (x, y) batches from a 1-D token array with its own random generator.

    data:       1-D integer array (e.g. `tokenizer.encode_array(text)`), at least
                block_size + 1 tokens.
    seed:       seeds this sampler's generator; None draws the seed from tinygpt's CPU
                generator, so `tg.manual_seed` makes the batches repeat. The stream is
                independent of `tg.manual_seed(seed)`'s with the same integer, so one
                seed for the weights and the batches does not tie the two together.
    device:     where x and y are made; the data is copied there once.
    vocab_size: when given, every token id is checked once, here, on the host, to lie in
                [0, vocab_size): a model on a GPU does not check the ids of each batch
                (that would make the host wait for the GPU at every step).

    `state_dict()` / `load_state_dict()` save and restore the generator, so a resumed run
    draws the same batches as one that never stopped.

    >>> sampler = BatchSampler(train_data, block_size=64, batch_size=12, seed=1337)
    >>> x, y = sampler.get_batch()      # (12, 64) int64 each; y is x shifted by one
    """

    def __init__(self, data, block_size, batch_size, seed=None, device="cpu", vocab_size=None):
        self.data = as_token_array(data)
        _check_sizes(len(self.data), block_size, batch_size)
        if vocab_size is not None:
            check_token_ids(self.data, vocab_size)
        self.block_size, self.batch_size = int(block_size), int(batch_size)
        self.device = backend.normalize_device(device)
        if seed is None:
            seed = int(backend.generator("cpu").integers(2 ** 63))
        # A spawn key of its own: `np.random.default_rng(seed)` (the weights' generator
        # after `tg.manual_seed(seed)`) starts from SeedSequence(seed) itself, and a
        # sampler seeded alike would replay the weights' random bits as batch positions.
        self.rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(BATCH_STREAM,))))
        self._device_data = None

    @property
    def num_windows(self):
        """How many distinct windows there are: start indices 0 .. len(data) - T - 1."""
        return len(self.data) - self.block_size

    def sample_starts(self):
        """batch_size start indices, uniform over every window (advances the generator)."""
        return self.rng.integers(0, self.num_windows, size=self.batch_size)

    def get_batch(self):
        """The next random batch (x, y): int64 Tensors of shape (batch_size, block_size)."""
        if self._device_data is None:
            self._device_data = backend.to_device(self.data, self.device)
        return _gather(self._device_data, self.sample_starts(), self.block_size, self.device)

    def __iter__(self):
        return self

    def __next__(self):
        return self.get_batch()

    def state_dict(self):
        """The generator's state (plain Python ints and strings) and the batch shape."""
        return {"rng": self.rng.bit_generator.state, "block_size": self.block_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state):
        """Continue from `state_dict()`'s output: the next batches are the ones the saved
        sampler would have drawn next."""
        rng = state.get("rng") if isinstance(state, dict) else None
        if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
            raise ValueError(
                "not a BatchSampler state: expected a dict with an 'rng' entry holding a "
                f"PCG64 generator state, got {state!r:.200}")
        self.rng.bit_generator.state = rng

    def __repr__(self):
        return (f"BatchSampler({len(self.data)} tokens, block_size={self.block_size}, "
                f"batch_size={self.batch_size}, device={self.device!r})")
