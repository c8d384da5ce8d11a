"""Generation's machinery (floor 5): the KV cache of one attention layer, and the sampler
that turns next-token logits into token ids. `GPT.generate` and the chat use both.
Imports: numpy, autograd.
"""

import math
import numbers

import numpy as np

from ..autograd import backend
from ..autograd.tensor import Tensor


class KVCache:
    """The keys and values one attention layer has computed, for positions 0..length-1,
    with which of them are padding.

    A dense layer keeps every position, in a buffer preallocated at the block size, so
    appending one position is a copy into place. A banded layer of window W keeps the W
    most recent only, in a ring: position p in slot p % W.
    """

    __slots__ = ("k", "v", "real", "padded", "length", "window")

    def __init__(self, batch_size, n_head, capacity, head_size, dtype, device, window=None):
        xp = backend.array_module_for_device(device)
        slots = capacity if window is None else min(window, capacity)
        self.k = xp.empty((batch_size, n_head, slots, head_size), dtype=dtype)
        self.v = xp.empty_like(self.k)
        self.real = xp.ones((batch_size, slots), dtype=bool)     # False where padding
        self.padded = False                     # whether `real` holds a False (known here)
        self.length = 0
        self.window = window

    def append(self, k, v, key_mask=None):
        """Store k, v (B, H, T, hs) of the next T positions (key_mask (B, T): False where
        padding); return the keys and values the T new queries attend over, (B, H, S, hs)
        each, and the boolean mask of which of them each query may see, (B, 1, T, S) (True
        = may attend), or None when every query may see every key."""
        T, start = k.shape[2], self.length
        end = start + T
        new_real = None
        if key_mask is not None:
            new_real = key_mask.data
            self.padded = self.padded or not bool(new_real.all())   # one look, at prefill
        if self.window is None:
            if end > self.k.shape[2]:
                raise ValueError(
                    f"KV cache overflow: {end} positions, but the cache holds {self.k.shape[2]}")
            self.k[:, :, start:end] = k.data
            self.v[:, :, start:end] = v.data
            self.real[:, start:end] = True if new_real is None else new_real
            self.length = end
            return (Tensor(self.k[:, :, :end]), Tensor(self.v[:, :, :end]),
                    self._mask(start, T, np.arange(end), self.real[:, :end]))
        return self._append_banded(k.data, v.data, new_real)

    def _append_banded(self, k, v, new_real):
        xp = backend.array_module(self.k)
        W, T, start = self.window, k.shape[2], self.length
        kept = np.arange(max(0, start - (W - 1)), start)         # cached positions still seen
        slots = xp.asarray(kept % W)
        keys = xp.concatenate([self.k[:, :, slots], k], axis=2)   # oldest first
        values = xp.concatenate([self.v[:, :, slots], v], axis=2)
        real = self.real[:, slots]
        real = xp.concatenate([real, xp.ones(k.shape[:1] + (T,), dtype=bool)
                               if new_real is None else new_real], axis=1)
        positions = np.concatenate([kept, np.arange(start, start + T)])
        mask = self._mask(start, T, positions, real)
        # Keep the last W positions (of all seen so far) in their ring slots.
        last = positions[-min(W, len(positions)):]
        ring = xp.asarray(last % W)
        self.k[:, :, ring] = keys[:, :, -len(last):]
        self.v[:, :, ring] = values[:, :, -len(last):]
        self.real[:, ring] = real[:, -len(last):]
        self.length = start + T
        return Tensor(keys), Tensor(values), mask

    def _mask(self, start, T, positions, real):
        """(B, 1, T, S): the query at position start + i may see the key at positions[j]
        when that key is not padding, not later than the query, and (banded) less than W
        positions before it; None when that holds for every pair."""
        xp = backend.array_module(self.k)
        query = np.arange(start, start + T)[:, None]
        seen = positions[None, :] <= query                          # (T, S), on the host
        if self.window is not None:
            seen &= query - positions[None, :] < self.window
        if seen.all() and not self.padded:
            return None
        allowed = xp.asarray(seen)[None, None] & real[:, None, None, :]
        return Tensor(allowed)

    def reset(self):
        """Forget every position (the next append starts at position 0)."""
        self.length = 0
        self.padded = False


class Sampler:
    """Turns next-token logits (B, V) into token ids (B, 1) by the rules of `GPT.generate`.

    Works in float64 NumPy on the host: (B, V) per step is small, and one code path keeps
    CPU and GPU sampling identical for a given seed.
    """

    def __init__(self, vocab_size, temperature=1.0, top_k=None, top_p=None, do_sample=True,
                 seed=None):
        if not isinstance(do_sample, bool):
            raise TypeError(f"do_sample must be True or False, got {do_sample!r}")
        if do_sample and (isinstance(temperature, bool)
                          or not isinstance(temperature, numbers.Real)
                          or not 0 < temperature < math.inf):
            raise ValueError(
                f"temperature must be a finite number > 0 when sampling, got {temperature!r} "
                f"(for the most likely token use do_sample=False)")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
                raise TypeError(f"top_k must be an int or None, got {top_k!r}")
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                                  or not 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.vocab_size = vocab_size
        self.temperature, self.do_sample = float(temperature), do_sample
        # Filters that cannot remove anything are dropped, so they change nothing at all.
        self.top_k = None if top_k is None or top_k >= vocab_size else int(top_k)
        self.top_p = None if top_p is None or top_p == 1 else float(top_p)
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, logits):
        logits = backend.to_numpy(logits).astype(np.float64)      # (B, V)
        if np.isnan(logits).any():
            raise FloatingPointError(
                "the model produced NaN logits: its weights are not usable (did training "
                "diverge?)")
        # A +inf logit is a certainty: its token is the argmax, and sampling picks among the
        # +inf tokens alone (the others get probability 0) instead of computing inf - inf.
        certain = np.isposinf(logits)
        rows = certain.any(axis=-1)
        logits[rows] = np.where(certain[rows], 0.0, -np.inf)
        if np.isneginf(logits).all(axis=-1).any():
            raise FloatingPointError(
                "the model gave every token a logit of -inf: there is nothing to sample from")
        if not self.do_sample:
            return logits.argmax(axis=-1)[:, None]
        V = logits.shape[-1]
        # Shift by the maximum before dividing: every logit is then <= 0, and a tiny
        # temperature sends the others to -inf (probability 0) instead of overflowing them
        # all to +inf; the maximum stays at 0, probability 1 before normalising.
        logits -= logits.max(axis=-1, keepdims=True)
        with np.errstate(over="ignore"):
            logits /= self.temperature
        if self.top_k is not None:
            # Keep the top_k largest logits (ties with the k-th are kept too).
            kth = np.partition(logits, V - self.top_k, axis=-1)[:, V - self.top_k, None]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        if self.top_p is not None:
            # Drop a token when the tokens ranked above it already hold top_p of the mass;
            # the most likely token always stays.
            order = np.argsort(-probs, axis=-1, kind="stable")
            ranked = np.take_along_axis(probs, order, axis=-1)
            drop = np.empty(probs.shape, dtype=bool)
            np.put_along_axis(drop, order, np.cumsum(ranked, axis=-1) - ranked >= self.top_p,
                              axis=-1)
            probs[drop] = 0.0
        # Inverse-CDF sampling, one uniform per row: the first token whose cumulative
        # probability passes u (tokens of probability 0 can never be picked).
        cdf = np.cumsum(probs, axis=-1)
        cdf /= cdf[:, -1:]
        rng = self.rng if self.rng is not None else backend.generator("cpu")
        u = rng.random(len(cdf))
        return np.minimum((cdf <= u[:, None]).sum(axis=-1), V - 1)[:, None]
