"""A character-level tokenizer: one token per Unicode character (floor 4, data).

The vocabulary is the sorted set of the characters of a training text, so token i is the
i-th smallest character (by code point) and `vocab_size` is the number of distinct
characters (65 for tiny Shakespeare). It is saved with each checkpoint (`to_dict`), since
a model only understands the ids of the vocabulary it was trained with.

Imports: numpy, the standard library, validate.
"""

import numpy as np

from .. import validate


class CharTokenizer:
    """encode(str) -> list[int] and decode(ids) -> str over a fixed set of characters.

    chars: the vocabulary in id order (a string or a sequence of one-character strings).

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.vocab_size, tok.encode("hole")
    (4, [1, 3, 2, 0])
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'
    """

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise ValueError("a character vocabulary needs at least one character, got none")
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entry {i} must be one character, got {c!r}")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"the vocabulary repeats the character(s) {repeated}")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self._table = None  # code point -> id (-1 when absent), built by encode_array

    @classmethod
    def from_text(cls, text):
        """The tokenizer whose vocabulary is the sorted set of characters of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"from_text expects a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot build a character vocabulary from an empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        """The id of each character of `text`, a list of ints. A character outside the
        vocabulary raises ValueError naming it and its position."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            self._raise_unknown(text)

    def encode_array(self, text, dtype=None):
        """`encode(text)` as a 1-D NumPy array, vectorised (a megabyte in milliseconds).

        dtype: uint16 by default when the vocabulary has at most 65,536 characters (half
        the memory of int32, as nanoGPT stores its data), int32 otherwise.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode_array expects a str, got {type(text).__name__}")
        if dtype is None:
            dtype = np.uint16 if self.vocab_size <= 2 ** 16 else np.int32
        if self._table is None:
            # A lookup table indexed by code point: at most 4.4 MB (0x10FFFF entries) for
            # a vocabulary holding the largest code points, 512 bytes for ASCII.
            codes = [ord(c) for c in self.chars]
            self._table = np.full(max(codes) + 1, -1, dtype=np.int32)
            self._table[codes] = np.arange(len(codes), dtype=np.int32)
        # UTF-32 gives one fixed-width code point per character.
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        table = self._table
        ids = table[np.minimum(codes, len(table) - 1)]
        if (ids < 0).any() or (codes >= len(table)).any():
            self._raise_unknown(text)
        return ids.astype(dtype)

    def _raise_unknown(self, text):
        for i, c in enumerate(text):
            if c not in self.stoi:
                raise ValueError(
                    f"character {c!r} at position {i} is not in the tokenizer's vocabulary "
                    f"of {self.vocab_size} characters (it was not in the training text)")

    def decode(self, ids):
        """The text of a sequence of ids (a list, a NumPy array or a Tensor); an id outside
        [0, vocab_size) raises ValueError naming it and the vocabulary size."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        chars, n = self.chars, len(self.chars)
        out = []
        for i in ids:
            validate.integer("each token id", i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is out of range for a vocabulary of size {n}")
            out.append(chars[i])
        return "".join(out)

    # --- save and load -----------------------------------------------------------------
    def to_dict(self):
        """A JSON-serialisable description: {"type": "char", "chars": "..."}."""
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d):
        """The tokenizer `to_dict` described, with the same ids."""
        if not isinstance(d, dict) or d.get("type") != "char" or "chars" not in d:
            got = {k: d[k] for k in d if k != "chars"} if isinstance(d, dict) else d
            raise ValueError(
                "not a character tokenizer description: expected a dict with type 'char' "
                f"and 'chars', got {got!r:.200}")
        return cls(d["chars"])

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __hash__(self):
        return hash(tuple(self.chars))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"
