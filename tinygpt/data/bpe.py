"""GPT-2's byte-level byte-pair encoding, written from scratch (floor 4, data).

Text becomes token ids in three steps, the same three as GPT-2 and tiktoken:

1. A regular expression splits the text into pre-tokens (words with their leading space,
   runs of digits, runs of punctuation, runs of whitespace). Merges never cross a pre-token
   boundary, so " the" is always the same tokens wherever it appears, and a cache per
   pre-token makes encoding fast.
2. Each pre-token is turned into its UTF-8 bytes, one part per byte. Every text is then
   encodable: all 256 single bytes are tokens, so nothing is ever "unknown".
3. Adjacent parts are merged, lowest rank first, until no adjacent pair forms a token.

A vocabulary is a table `ranks: bytes -> rank`. As in tiktoken, the merge priority of a pair of
parts is the rank of their concatenated bytes: a pair merges when its concatenation is a token,
and earlier-learned (lower-rank) tokens merge first. For GPT-2 the rank is also the token id.

`BPETokenizer` loads GPT-2's vocabulary from a tiktoken rank file (`from_tiktoken`, `gpt2`) or
from OpenAI's original `encoder.json` + `vocab.bpe` (`from_encoder_files`), trains a new
vocabulary (`train`), and saves/loads its own JSON format (`save`, `load`, `to_dict`). Encoding
is identical to tiktoken's for both loaders.

    >>> tok = BPETokenizer.gpt2()                 # doctest: +SKIP
    >>> tok.encode("Hello world")                 # doctest: +SKIP
    [15496, 995]

This module holds encoding and decoding; the file formats are in bpe_files.py and training
in bpe_train.py (their names are re-exported here). Imports: the standard library, `regex`
(GPT-2's pattern needs `\\p{L}`, which `re` lacks), tinygpt.files, tinygpt.validate, the
two modules above; numpy arrays of ids are accepted by duck typing.
"""

import heapq
import json
import operator
import sys

import regex

from .. import validate
from ..files import atomic_write_text, read_json
from . import bpe_files
from .bpe_files import bytes_to_unicode, find_gpt2_vocab  # noqa: F401  (imported from here)
from .bpe_train import learn_ranks

# GPT-2's pre-tokenizer pattern: contractions, letters, digits and other symbols (each with an
# optional leading space), then whitespace. `\s+(?!\S)` leaves the last space of a run to start
# the next word, so "a   b" splits as "a", "  ", " b".
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"

# Pieces longer than this (in bytes) are merged with a heap in O(n log n); shorter ones with a
# plain list, whose min()/index() run in C and beat the heap's Python bookkeeping.
_HEAP_THRESHOLD = 128
# The per-pre-token cache is cleared when it reaches this many entries (bounded memory), and
# pieces longer than _CACHE_MAX_PIECE characters are not cached (they rarely repeat).
_CACHE_SIZE = 1 << 17
_CACHE_MAX_PIECE = 256
_NO_RANK = sys.maxsize  # "this pair does not merge": larger than any real rank


def byte_pair_merge(ranks, data, max_rank=_NO_RANK):
    """Merge the bytes of `data` into tokens: tiktoken's byte-pair merge, on a list.

    `pair_ranks[i]` is the rank of parts[i] + parts[i+1]. Each step merges the lowest-rank
    pair, the leftmost on a tie, and recomputes only the two pairs the merge touched. Only
    tokens of rank < `max_rank` are used: with a token's own rank, the two parts left are
    the merge that made it (how Hugging Face's merges.txt is written, `hf_tokenizer_files`).

    >>> byte_pair_merge({b"a": 0, b"b": 1, b"ab": 2}, b"abab")
    [b'ab', b'ab']
    """
    parts = [data[i:i + 1] for i in range(len(data))]
    pair_ranks = [ranks.get(data[i:i + 2], _NO_RANK) for i in range(len(data) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best >= max_rank:
            break
        i = pair_ranks.index(best)  # leftmost of equal ranks, as in tiktoken
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], _NO_RANK)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], _NO_RANK)
    return parts


class BPETokenizer:
    """A byte-level BPE tokenizer: `encode(str) -> list[int]`, `decode(list[int]) -> str`.

    ranks:          bytes -> merge rank for every regular token; all 256 single bytes needed.
    special_tokens: str -> id for tokens such as "<|endoftext|>", which `encode` only produces
                    when asked to (`allowed_special`) and which never come out of merges.
    ids:            bytes -> token id, when ids are not the ranks (only `from_encoder_files`
                    needs this); default: id = rank.
    pattern:        the pre-tokenizer regular expression (default GPT-2's).
    """

    def __init__(self, ranks, special_tokens=None, *, ids=None, pattern=GPT2_PATTERN):
        ranks = dict(ranks)
        special_tokens = dict(special_tokens or {})
        ids = ranks if ids is None else dict(ids)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(
                f"a byte-level BPE vocabulary needs all 256 single bytes as tokens; "
                f"{len(missing)} are missing, e.g. byte {missing[0]:#04x}")
        if len(set(ranks.values())) != len(ranks):
            raise ValueError("two tokens share a rank; every rank must be unique")
        unknown = [t for t in ranks if t not in ids]
        if unknown:
            raise ValueError(f"token {unknown[0]!r} has a rank but no id")
        for name in special_tokens:
            if not isinstance(name, str) or not name:
                raise TypeError(f"special token names must be non-empty strings, got {name!r}")
        for token, i in [*ids.items(), *special_tokens.items()]:
            validate.integer(f"the id of token {token!r}", i, minimum=0)

        self.pattern = pattern
        try:
            self._pat = regex.compile(pattern)
        except regex.error as e:
            raise ValueError(f"pre-tokenizer pattern does not compile: {e}") from e
        self._ranks = ranks              # bytes -> merge priority
        self._ids = ids                  # bytes -> token id (the same dict for GPT-2)
        self.special_tokens = special_tokens
        self.eot_token = special_tokens.get(ENDOFTEXT)

        # id -> bytes, a list so decode is one C-level lookup per id; None marks unused ids.
        size = max([*ids.values(), *special_tokens.values()]) + 1
        if size > 2 * (len(ids) + len(special_tokens)) + 1024:
            # A corrupt file could name id 10**12; refuse before allocating the table.
            raise ValueError(f"the largest token id is {size - 1}, but there are only "
                             f"{len(ids) + len(special_tokens)} tokens; ids must be nearly dense")
        table = [None] * size
        specials_as_bytes = [(name.encode("utf-8"), i) for name, i in special_tokens.items()]
        for token, i in [*ids.items(), *specials_as_bytes]:
            if table[i] is not None:
                raise ValueError(f"id {i} is used twice: by {table[i]!r} and by {token!r}")
            table[i] = token
        self._decoder = table
        self._cache = {}
        self._special_pats = {}  # frozenset of allowed specials -> compiled splitting pattern

    # ----------------------------------------------------------------------------- loaders

    @classmethod
    def from_tiktoken(cls, path, special_tokens=None):
        """Load a tiktoken rank file: one `base64(token bytes) rank` line per token.

        special_tokens defaults to {"<|endoftext|>": max rank + 1}, which for GPT-2's file is
        50256, GPT-2's end-of-text id. Pass {} for none.
        """
        ranks = bpe_files.read_tiktoken(path)
        if special_tokens is None:
            special_tokens = {ENDOFTEXT: max(ranks.values()) + 1}
        return cls(ranks, special_tokens)

    @classmethod
    def from_encoder_files(cls, encoder_json, vocab_bpe, special_tokens=(ENDOFTEXT,)):
        """Load OpenAI's original GPT-2 files: `encoder.json` (token string -> id) and
        `vocab.bpe` (one merge `a b` per line, in rank order); see
        `bpe_files.read_encoder_files`. Names in `special_tokens` found in encoder.json are
        special."""
        ranks, specials, ids = bpe_files.read_encoder_files(encoder_json, vocab_bpe,
                                                            special_tokens)
        return cls(ranks, specials, ids=ids)

    @classmethod
    def gpt2(cls):
        """GPT-2's tokenizer, from the gpt2.tiktoken rank file `find_gpt2_vocab` finds."""
        path = find_gpt2_vocab()
        tok = cls.from_tiktoken(path, {ENDOFTEXT: 50256})
        if len(tok._ranks) != 50256:
            raise ValueError(f"{path} has {len(tok._ranks)} tokens; GPT-2's gpt2.tiktoken has "
                             f"50256 (ranks 0..50255)")
        return tok

    # ----------------------------------------------------------------------------- encode

    @property
    def vocab_size(self):
        """One more than the largest id (special tokens included): the model's vocab_size."""
        return len(self._decoder)

    n_vocab = vocab_size  # tiktoken's name

    def encode(self, text, allowed_special=(), disallowed_special="all"):
        """Encode `text` to a list of token ids.

        Special token strings (e.g. "<|endoftext|>") in `text` raise ValueError unless named in
        `allowed_special` (a set of names, or "all"), which encodes them as their ids. This
        guards against user text smuggling in control tokens. As in tiktoken,
        `disallowed_special=()` (or `encode_ordinary`) encodes them as plain text instead.

            >>> tok.encode("Hello world<|endoftext|>", allowed_special="all")  # doctest: +SKIP
            [15496, 995, 50256]
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed = frozenset(self.special_tokens)
        else:
            if isinstance(allowed_special, str):
                raise TypeError(f"allowed_special must be a set of names or 'all', "
                                f"got the string {allowed_special!r}")
            allowed = frozenset(allowed_special)
            unknown = allowed - self.special_tokens.keys()
            if unknown:
                raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special "
                                 f"tokens of this tokenizer ({sorted(self.special_tokens)})")
        if disallowed_special == "all":
            disallowed = self.special_tokens.keys() - allowed
        else:
            disallowed = frozenset(disallowed_special)
        for name in disallowed:
            if name in text:
                raise ValueError(
                    f"text contains the special token {name!r}, which encode() does not allow "
                    f"by default; pass allowed_special={{{name!r}}} (or 'all') to encode it as "
                    f"id {self.special_tokens[name]}, or use encode_ordinary() to encode it as "
                    f"plain text")
        if not allowed or not any(name in text for name in allowed):
            return self.encode_ordinary(text)

        # Split around the allowed specials, longest first so that one special that is a
        # prefix of another does not win; the text between them is encoded as ordinary text.
        pat = self._special_pats.get(allowed)
        if pat is None:
            names = sorted(allowed, key=len, reverse=True)
            pat = self._special_pats[allowed] = regex.compile("|".join(map(regex.escape, names)))
        out, start = [], 0
        for m in pat.finditer(text):
            out += self.encode_ordinary(text[start:m.start()])
            out.append(self.special_tokens[m.group()])
            start = m.end()
        out += self.encode_ordinary(text[start:])
        return out

    def encode_ordinary(self, text):
        """Encode `text` ignoring special tokens: "<|endoftext|>" becomes ordinary tokens."""
        cache, encode_piece = self._cache, self._encode_piece
        out = []
        extend = out.extend  # bound once: this loop runs once per pre-token
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = encode_piece(piece)
            extend(ids)
        return out

    def _encode_piece(self, piece):
        """Token ids of one pre-token (a str), remembered in the cache."""
        data = piece.encode("utf-8")
        if data in self._ranks:
            # tiktoken's shortcut: a pre-token that is itself a token is that token. Most words
            # are, which saves the merge loop; kept for exact agreement with tiktoken.
            parts = (data,)
        elif len(data) <= _HEAP_THRESHOLD:
            parts = byte_pair_merge(self._ranks, data)
        else:
            parts = self._merge_heap(data)
        ids = self._ids
        result = tuple([ids[p] for p in parts])
        if len(piece) <= _CACHE_MAX_PIECE:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()  # crude but bounded; a fresh cache refills in one pass
            self._cache[piece] = result
        return result

    def _merge_heap(self, data):
        """The same merge as `byte_pair_merge` in O(n log n), for long pieces.

        Parts are named by their start offset and linked through `end`/`prev` offsets. The heap
        holds (rank, start) of candidate pairs; ordering by start keeps tiktoken's leftmost
        tie-break. Entries are not removed when a merge changes a pair; an entry is stale when
        the pair now at `start` has another rank, and is skipped when popped.
        """
        ranks = self._ranks
        n = len(data)
        end = list(range(1, n + 1))      # end[i]: end offset of the part starting at i
        prev = list(range(-1, n - 1))    # prev[i]: start of the part before the one at i
        alive = [True] * n
        heap = [(ranks[data[i:i + 2]], i) for i in range(n - 1) if data[i:i + 2] in ranks]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            if not alive[i] or end[i] >= n or ranks.get(data[i:end[end[i]]]) != rank:
                continue  # stale: the part at i or its right neighbour changed
            j = end[i]
            end[i] = end[j]              # part i swallows part j
            alive[j] = False
            k = end[i]
            if k < n:
                prev[k] = i
                r = ranks.get(data[i:end[k]])
                if r is not None:
                    heapq.heappush(heap, (r, i))
            p = prev[i]
            if p >= 0:
                r = ranks.get(data[p:end[i]])
                if r is not None:
                    heapq.heappush(heap, (r, p))
        return [data[i:end[i]] for i in range(n) if alive[i]]

    # ----------------------------------------------------------------------------- decode

    def decode_bytes(self, ids):
        """The bytes that token ids stand for (special tokens as their UTF-8 names)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # numpy arrays (and 0-d ones) become Python ints
        if isinstance(ids, int):
            ids = [ids]
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        if not ids:
            return b""
        table = self._decoder
        try:
            # min() catches negative ids, which list indexing would silently wrap around.
            if min(ids) >= 0:
                return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            pass  # an id past the end, an unused id (None in the table) or a non-int
        self._bad_id(ids)

    def _bad_id(self, ids):
        """Find the first id `decode_bytes` cannot handle and raise an error naming it."""
        for i in ids:
            try:
                i = operator.index(i)  # ints and NumPy integers, not floats or strings
            except TypeError:
                raise TypeError(f"token ids must be ints, got {i!r} ({type(i).__name__})") from None
            if not 0 <= i < len(self._decoder):
                raise ValueError(f"token id {i} is out of range: valid ids are "
                                 f"0..{len(self._decoder) - 1} (vocab_size {self.vocab_size})")
            if self._decoder[i] is None:
                raise ValueError(f"token id {i} is not used by this vocabulary")
        raise TypeError(f"token ids must be ints, got {ids!r}")

    def decode(self, ids):
        """Decode token ids to text. Bytes that are not valid UTF-8 (a token sequence cut in the
        middle of a character) become U+FFFD, so decoding never fails on valid ids."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id):
        """The bytes of one token."""
        return self.decode_bytes([token_id])

    # ----------------------------------------------------------------------------- training

    @classmethod
    def train(cls, text, vocab_size, verbose=False, pattern=GPT2_PATTERN):
        """Learn a byte-level BPE vocabulary of `vocab_size` regular tokens from `text`
        (`bpe_train.learn_ranks`: the most frequent adjacent pair within pre-tokens merged
        first, ties to the smallest (left id, right id)). "<|endoftext|>" is then appended
        as special token id `vocab_size`, so `tok.vocab_size == vocab_size + 1`, as GPT-2
        has 50256 regular tokens plus end-of-text (fewer when no pair is left to merge)."""
        ranks = learn_ranks(text, vocab_size, pattern, verbose=verbose)
        return cls(ranks, {ENDOFTEXT: len(ranks)}, pattern=pattern)


    # ----------------------------------------------------------------------------- saving

    def to_dict(self):
        """A JSON-serialisable dict of this tokenizer (embedded in training checkpoints):
        "tokens" lists the token bytes (base64) in merge-rank order; a token's id is its
        index unless an "ids" list is present."""
        return bpe_files.to_dict(self._ranks, self._ids, self.special_tokens, self.pattern)

    @classmethod
    def from_dict(cls, d):
        """Rebuild a tokenizer from `to_dict()`'s output; a foreign dict raises ValueError."""
        ranks, specials, ids, pattern = bpe_files.from_dict(d, GPT2_PATTERN)
        return cls(ranks, specials, ids=ids, pattern=pattern)

    def save(self, path, overwrite=True):
        """Write this tokenizer to a JSON file (atomically: temporary file, then rename).
        With overwrite=False an existing file, even one written meanwhile by another
        process, is kept and FileExistsError raised."""
        atomic_write_text(path, json.dumps(self.to_dict()), overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by `save`."""
        d = read_json(path)
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self):
        return (f"BPETokenizer(vocab_size={self.vocab_size}, "
                f"special_tokens={self.special_tokens})")
