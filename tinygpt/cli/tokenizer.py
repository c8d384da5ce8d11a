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

import sys
import time
from pathlib import Path

from .common import add_bool

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
    add_bool(train, "--overwrite", "replace an existing --output", default=False)
    add_bool(train, "--verbose", "print every merge", default=False)

    encode = actions.add_parser("encode", help="print the token ids of a text")
    encode.add_argument("--tokenizer", required=True,
                        help="a tokenizer file, 'gpt2', or a pretrained model folder")
    source = encode.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to encode")
    source.add_argument("--input", help="a UTF-8 file to encode")
    add_bool(encode, "--allow_special", "encode '<|endoftext|>' in the text as its special id",
             default=False)

    decode = actions.add_parser("decode", help="print the text of token ids")
    decode.add_argument("--tokenizer", required=True,
                        help="a tokenizer file, 'gpt2', or a pretrained model folder")
    decode.add_argument("--ids", nargs="+", required=True,
                        help="token ids, separated by spaces or commas")


def run(args):
    return {"train": train, "encode": encode, "decode": decode}[args.action](args)


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
    # Not over a file that appeared meanwhile (another run writing the same --output).
    tokenizer.save(output, overwrite=args.overwrite)
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
    from ..data.tokenizers import load_tokenizer
    tokenizer = load_tokenizer(args.tokenizer)
    text = args.text if args.text is not None else _read_text(args.input)
    ids = tokenizer.encode(text, allowed_special="all") if args.allow_special \
        else tokenizer.encode(text)
    print(" ".join(map(str, ids)))
    return 0


def decode(args):
    from ..data.tokenizers import load_tokenizer
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


def _read_text(path):
    from ..data.corpus import read_text_file
    try:
        return read_text_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no input file at {path}") from None
