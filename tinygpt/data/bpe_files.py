"""The file formats of byte-level BPE vocabularies (floor 4, data): tiktoken's rank files,
OpenAI's original `encoder.json` + `vocab.bpe`, and tinygpt's own JSON (`to_dict`,
`from_dict`); where GPT-2's rank file is found (`find_gpt2_vocab`). `BPETokenizer`'s
loaders and `save` / `load` call these.

Imports: the standard library and tinygpt.files.
"""

import base64
import os
from pathlib import Path

from ..files import cache_dir, read_json

FORMAT = "tinygpt-bpe"  # marker in files written by `save`, so `load` can reject foreign JSON
FORMAT_VERSION = 1


def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to 256 printable unicode characters.

    `encoder.json` and `vocab.bpe` write tokens as strings; GPT-2 makes every byte printable by
    keeping the printable Latin-1 bytes as themselves and moving the rest (control characters,
    space, 0x7F-0xA0, 0xAD) to chr(256), chr(257), ... in byte order. So space is "Ġ" (U+0120).
    The insertion order of the dict (printable bytes first) is also GPT-2's id order of the 256
    byte tokens.
    """
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def find_gpt2_vocab():
    """Path of GPT-2's gpt2.tiktoken rank file on this machine; nothing is downloaded.

    Looks at $TINYGPT_GPT2_VOCAB (a path to the file), then at gpt2.tiktoken in the cache folder
    ($TINYGPT_CACHE, else $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt). Raises
    FileNotFoundError saying how to supply the file.
    """
    env = os.environ.get("TINYGPT_GPT2_VOCAB")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"TINYGPT_GPT2_VOCAB is set to {env!r}, but no file is there; point it at "
                f"GPT-2's gpt2.tiktoken rank file")
        return path
    path = cache_dir() / "gpt2.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(
            f"GPT-2's vocabulary file gpt2.tiktoken was not found at {path}. Supply it by setting "
            f"TINYGPT_GPT2_VOCAB=/path/to/gpt2.tiktoken, or copy the file to {path}. It ships "
            f"with the openai-whisper package as whisper/assets/gpt2.tiktoken (835,554 bytes); "
            f"tinygpt downloads nothing.")
    return path


def read_tiktoken(path):
    """The ranks (bytes -> rank) of a tiktoken rank file: one `base64(token bytes) rank`
    line per token."""
    path = Path(path)
    ranks = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise ValueError(f"expected 2 fields, found {len(fields)}")
                token = base64.b64decode(fields[0], validate=True)
                rank = int(fields[1])
            except ValueError as e:  # binascii.Error is a ValueError
                raise ValueError(
                    f"{path}:{lineno}: not a tiktoken rank file line "
                    f"('base64(token) rank'): {line[:60]!r} ({e})") from None
            if token in ranks:
                raise ValueError(f"{path}:{lineno}: token {token!r} appears twice")
            ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path}: no tokens found; is it a tiktoken rank file?")
    return ranks


def read_encoder_files(encoder_json, vocab_bpe, special_tokens):
    """(ranks, special tokens, ids) from OpenAI's original GPT-2 files: `encoder.json`
    (token string -> id) and `vocab.bpe` (one merge `a b` per line, in rank order).

    Token strings are bytes written through `bytes_to_unicode`. As tiktoken does, the 256
    byte tokens take ranks 0..255 and the i-th merge makes the token of rank 256 + i; ids
    come from encoder.json. Names in `special_tokens` found in encoder.json are special.
    """
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(s, where):
        try:
            return bytes(byte_decoder[c] for c in s)
        except KeyError as e:
            raise ValueError(f"{where}: {s!r} has a character outside GPT-2's byte "
                             f"alphabet: {e.args[0]!r}") from None

    encoder = read_json(encoder_json)
    if not isinstance(encoder, dict):
        raise ValueError(f"{encoder_json}: expected a JSON object token -> id")

    specials = {s: encoder.pop(s) for s in special_tokens if s in encoder}
    ids = {to_bytes(s, encoder_json): i for s, i in encoder.items()}

    ranks = {bytes([b]): r for r, b in enumerate(bytes_to_unicode())}
    with open(vocab_bpe, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#version") or not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{vocab_bpe}:{lineno}: expected a merge 'a b', "
                                 f"found {line.rstrip()!r}")
            merged = to_bytes(fields[0], vocab_bpe) + to_bytes(fields[1], vocab_bpe)
            # A merge that rebuilds an existing token adds nothing: the first rank stands.
            ranks.setdefault(merged, len(ranks))
    unranked = [t for t in ids if t not in ranks]
    if unranked:
        raise ValueError(f"{encoder_json} has {len(unranked)} tokens that {vocab_bpe} never "
                         f"builds, e.g. {unranked[0]!r}")
    return ranks, specials, ids


def to_dict(ranks, ids, special_tokens, pattern):
    """A JSON-serialisable dict of a tokenizer (embedded in training checkpoints).

    "tokens" lists the token bytes (base64) in merge-rank order; a token's id is its index
    unless an "ids" list is present.
    """
    tokens = sorted(ranks, key=ranks.__getitem__)
    d = {"format": FORMAT, "version": FORMAT_VERSION, "pattern": pattern,
         "tokens": [base64.b64encode(t).decode("ascii") for t in tokens],
         "special_tokens": dict(special_tokens)}
    id_list = [ids[t] for t in tokens]
    if id_list != list(range(len(id_list))):
        d["ids"] = id_list
    return d


def from_dict(d, default_pattern):
    """(ranks, special tokens, ids or None, pattern) from `to_dict()`'s output (pattern
    `default_pattern` when the dict has none); a foreign dict raises ValueError."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"not a tinygpt BPE tokenizer: expected format {FORMAT!r}, "
                         f"found {found!r}")
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(f"tinygpt BPE format version {d.get('version')!r} is not supported "
                         f"(this tinygpt reads version {FORMAT_VERSION})")
    tokens, specials = d.get("tokens"), d.get("special_tokens", {})
    pattern = d.get("pattern", default_pattern)
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tinygpt BPE tokenizer: 'tokens' must be a list of base64 strings")
    if not isinstance(specials, dict) or not isinstance(pattern, str):
        raise ValueError("tinygpt BPE tokenizer: 'special_tokens' must be an object and "
                         "'pattern' a string")
    try:
        token_bytes = [base64.b64decode(t, validate=True) for t in tokens]
    except ValueError as e:  # binascii.Error is a ValueError
        raise ValueError(f"tinygpt BPE tokenizer: a token is not valid base64 ({e})") from None
    if len(set(token_bytes)) != len(token_bytes):
        raise ValueError("tinygpt BPE tokenizer: a token appears twice in 'tokens'")
    ranks = {t: r for r, t in enumerate(token_bytes)}
    ids = None
    if "ids" in d:
        if not isinstance(d["ids"], list) or len(d["ids"]) != len(tokens):
            raise ValueError("tinygpt BPE tokenizer: 'ids' must be a list as long as 'tokens'")
        ids = dict(zip(token_bytes, d["ids"]))
    return ranks, specials, ids, pattern
