"""`python -m tinygpt tokenizer`: train, and try out, byte-level BPE tokenizers.

    python -m tinygpt tokenizer train --input input.txt --vocab_size 4096 --output bpe.json
    python -m tinygpt tokenizer encode --tokenizer bpe.json --text "Hello world"
    python -m tinygpt tokenizer decode --tokenizer bpe.json --ids 15496 995

`train` learns GPT-2-style merges from a text file (`BPETokenizer.train`) and saves them in
tinygpt's own JSON format, which `python -m tinygpt train --tokenizer bpe.json` reads. It
refuses to replace an existing --output unless given --overwrite. `encode` and `decode`
take --tokenizer as such a file, "gpt2" (GPT-2's vocabulary, found by
`BPETokenizer.gpt2()`), or a pretrained model folder (vocab.json + merges.txt, ...).
"""

import json
import os
import sys
import time
from pathlib import Path

# The compression ratio printed after training is measured on this much of the input, so
# that a large corpus does not pay for a full encoding pass.
_SAMPLE_CHARS = 1_000_000


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    train = actions.add_parser("train", help="learn a byte-level BPE from a text file")
    train.add_argument("--input", required=True, help="the UTF-8 text file to learn from")
    train.add_argument("--vocab_size", type=int, required=True,
                       help="regular tokens to learn, >= 256 (the 256 bytes + merges); "
                            "<|endoftext|> is added after them")
    train.add_argument("--output", required=True, help="the tokenizer file to write (JSON)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    train.add_argument("--verbose", action="store_true", help="print every merge")

    encode = actions.add_parser("encode", help="print the token ids of a text")
    encode.add_argument("--tokenizer", required=True,
                        help="a tokenizer file, 'gpt2', or a pretrained model folder")
    source = encode.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to encode")
    source.add_argument("--input", help="a UTF-8 file to encode")
    encode.add_argument("--allow_special", action="store_true",
                        help="encode '<|endoftext|>' in the text as its special id")

    decode = actions.add_parser("decode", help="print the text of token ids")
    decode.add_argument("--tokenizer", required=True,
                        help="a tokenizer file, 'gpt2', or a pretrained model folder")
    decode.add_argument("--ids", nargs="+", required=True,
                        help="token ids, separated by spaces or commas")


def run(args):
    try:
        return {"train": train, "encode": encode, "decode": decode}[args.action](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, UnicodeDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def train(args):
    from ..data import BPETokenizer
    output = Path(args.output)
    # Every check before the (possibly long) training run.
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    if output.is_dir():
        raise FileExistsError(f"{output} is a folder; --output names the tokenizer file")
    if args.vocab_size < 256:
        raise ValueError(f"--vocab_size must be at least 256 (the byte tokens), got "
                         f"{args.vocab_size}")
    text = _read_text(args.input)
    print(f"training a byte-level BPE of {args.vocab_size} tokens "
          f"({args.vocab_size - 256} merges) on {args.input} ({len(text):,} characters)...",
          flush=True)
    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, args.vocab_size, verbose=args.verbose)
    seconds = time.perf_counter() - start
    if output.parent != Path(""):
        output.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(output)
    learned = tokenizer.vocab_size - 1 - 256          # minus <|endoftext|> and the bytes
    print(f"learned {learned} merges in {seconds:.1f} s; vocab_size {tokenizer.vocab_size} "
          f"(with <|endoftext|> = {tokenizer.eot_token}); saved to {output}")
    if learned < args.vocab_size - 256:
        print(f"note: the text ran out of pairs to merge before {args.vocab_size} tokens")
    sample = text[:_SAMPLE_CHARS]
    n_bytes, n_tokens = len(sample.encode("utf-8")), len(tokenizer.encode_ordinary(sample))
    if n_tokens:
        where = "the text" if len(sample) == len(text) else f"its first {len(sample):,} characters"
        print(f"{where}: {n_bytes:,} bytes -> {n_tokens:,} tokens "
              f"({n_bytes / n_tokens:.2f} bytes per token)")
    return 0


def encode(args):
    tokenizer = load_tokenizer(args.tokenizer)
    text = args.text if args.text is not None else _read_text(args.input)
    ids = tokenizer.encode(text, allowed_special="all") if args.allow_special \
        else tokenizer.encode(text)
    print(" ".join(map(str, ids)))
    return 0


def decode(args):
    tokenizer = load_tokenizer(args.tokenizer)
    ids = []
    for item in args.ids:
        for part in item.replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError:
                raise ValueError(f"--ids: {part!r} is not an integer token id") from None
    sys.stdout.write(tokenizer.decode(ids) + "\n")
    return 0


def load_tokenizer(spec):
    """A tokenizer from 'gpt2', a pretrained model folder, or a saved tokenizer file."""
    from ..data import BPETokenizer
    from ..model.pretrained import find_tokenizer, tokenizer_from_dict
    if spec == "gpt2" and not os.path.exists(spec):
        return BPETokenizer.gpt2()
    path = Path(spec)
    if path.is_dir():
        tokenizer = find_tokenizer(path)
        if tokenizer is None:
            raise FileNotFoundError(f"{path} holds no tokenizer (tinygpt_tokenizer.json, "
                                    f"vocab.json + merges.txt, or encoder.json + vocab.bpe)")
        return tokenizer
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path} (give a file written by "
                                f"`python -m tinygpt tokenizer train`, 'gpt2', or a folder)")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a tinygpt tokenizer file: not JSON ({e})") from None
    return tokenizer_from_dict(d, where=path)


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no input file at {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e})") from None
