"""Tokenizers by name, from files and folders, and back to files (floor 4, data).

- `tokenizer_from_dict(d)`: a CharTokenizer or BPETokenizer from its `to_dict()` (as
  checkpoints and tinygpt_tokenizer.json store it);
- `load_tokenizer(spec)`: "gpt2", a tokenizer file, or a model folder;
- `find_tokenizer(folder)`: the tokenizer files of a model folder (tinygpt's own, Hugging
  Face's vocab.json + merges.txt, or OpenAI's encoder.json + vocab.bpe);
- `require_tokenizer(model)`: a loaded model's tokenizer, or an error saying how to
  supply one;
- `hf_tokenizer_files(tokenizer)`: the vocab.json and merges.txt Hugging Face reads.

Imports: the standard library, data (char, bpe).
"""

import base64
import json
from pathlib import Path

from ..files import read_json
from .bpe import GPT2_PATTERN, BPETokenizer, byte_pair_merge, bytes_to_unicode
from .char import CharTokenizer

TOKENIZER_NAME = "tinygpt_tokenizer.json"   # the project's own format (any tokenizer, exact)
HF_VOCAB, HF_MERGES = "vocab.json", "merges.txt"           # Hugging Face's names ...
OPENAI_VOCAB, OPENAI_MERGES = "encoder.json", "vocab.bpe"  # ... for OpenAI's original files

# nanoGPT pads GPT-2's 50,257 tokens to 50,304; a model in that range without tokenizer
# files of its own is taken to speak GPT-2's vocabulary.
GPT2_VOCAB_RANGE = (50257, 50304)


def tokenizer_from_dict(d, where="tokenizer"):
    """A CharTokenizer or BPETokenizer from its `to_dict()`; `where` starts any error."""
    try:
        if isinstance(d, dict) and d.get("type") == "char":
            return CharTokenizer.from_dict(d)
        return BPETokenizer.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def load_tokenizer(spec):
    """A tokenizer from "gpt2" (GPT-2's, see `BPETokenizer.gpt2`), a model folder (see
    `find_tokenizer`), or a tokenizer file written by `BPETokenizer.save` (or any
    tokenizer's `to_dict()` as JSON)."""
    if spec == "gpt2" and not Path(spec).exists():
        return BPETokenizer.gpt2()
    path = Path(spec)
    if path.is_dir():
        tokenizer = find_tokenizer(path)
        if tokenizer is None:
            raise FileNotFoundError(f"{path} holds no tokenizer ({TOKENIZER_NAME}, {HF_VOCAB} + "
                                    f"{HF_MERGES}, or {OPENAI_VOCAB} + {OPENAI_MERGES})")
        return tokenizer
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path} (give a file written by "
                                f"`python -m tinygpt tokenizer train`, 'gpt2', or a folder)")
    return tokenizer_from_dict(read_json(path), where=path)


def find_tokenizer(folder, vocab_size=None):
    """The tokenizer for a model folder, or None.

    Tried in order: tinygpt_tokenizer.json (written by `save_pretrained`), vocab.json +
    merges.txt (Hugging Face), encoder.json + vocab.bpe (OpenAI), then GPT-2's tokenizer
    from `BPETokenizer.gpt2()` when `vocab_size` is GPT-2's (50,257 up to nanoGPT's 50,304)
    and the file is on this machine. A tokenizer with more ids than the model raises.
    """
    folder = Path(folder)
    tokenizer, source = None, None
    if (folder / TOKENIZER_NAME).is_file():
        source = folder / TOKENIZER_NAME
        tokenizer = tokenizer_from_dict(read_json(source), where=source)
    else:
        for vocab, merges in ((HF_VOCAB, HF_MERGES), (OPENAI_VOCAB, OPENAI_MERGES)):
            if (folder / vocab).is_file() and (folder / merges).is_file():
                source = folder / vocab
                tokenizer = BPETokenizer.from_encoder_files(folder / vocab, folder / merges)
                break
    if tokenizer is None and vocab_size is not None \
            and GPT2_VOCAB_RANGE[0] <= vocab_size <= GPT2_VOCAB_RANGE[1]:
        try:
            return BPETokenizer.gpt2()
        except FileNotFoundError:
            return None
    if tokenizer is not None and vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} token ids but the "
                         f"model's vocab_size is {vocab_size}; they do not belong together")
    return tokenizer


def require_tokenizer(model):
    """`model.tokenizer`, or a FileNotFoundError saying how to supply one."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    raise FileNotFoundError(
        f"this model has no tokenizer: put {HF_VOCAB} + {HF_MERGES} (or {OPENAI_VOCAB} + "
        f"{OPENAI_MERGES}, or a {TOKENIZER_NAME}) in its folder, or, for GPT-2's vocabulary, "
        f"set TINYGPT_GPT2_VOCAB=/path/to/gpt2.tiktoken (tinygpt downloads nothing)")


def hf_tokenizer_files(tokenizer):
    """(vocab.json text, merges.txt text) for a byte-level BPE with GPT-2's pattern, or None.

    tinygpt (like tiktoken) merges the adjacent pair whose concatenation has the lowest rank;
    Hugging Face's files list merges `a b` in priority order. The merge that made token t is
    found as tiktoken's converters do: byte-pair-merge t's bytes using only tokens of lower
    rank, which must leave exactly two parts. None when the tokenizer is not a byte-level
    BPE with GPT-2's pattern or the parts do not come out as two.
    """
    d = tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else None
    if not isinstance(d, dict) or d.get("format") != "tinygpt-bpe" \
            or d.get("pattern") != GPT2_PATTERN:
        return None
    tokens = [base64.b64decode(t) for t in d["tokens"]]          # in rank order
    ids = d.get("ids", range(len(tokens)))
    ranks = {t: r for r, t in enumerate(tokens)}
    to_text = bytes_to_unicode()

    def text(token):
        return "".join(to_text[b] for b in token)

    merges = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = byte_pair_merge(ranks, token, max_rank=rank)
        if len(parts) != 2:
            return None
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    vocab = {text(t): i for t, i in zip(tokens, ids)}
    vocab.update(d.get("special_tokens", {}))
    return (json.dumps(vocab, ensure_ascii=False),
            "#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
