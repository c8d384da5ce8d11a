"""Benchmark: GPT-2 BPE encoding speed in MB/s, tinygpt's tokenizer beside tiktoken's.

Run as `python -m bench bpe` or `python -m bench.bpe`. It encodes tiny Shakespeare
(from the shared data folder or `--file`) and a mixed text it builds itself (many scripts, emoji,
code), takes the median of several runs, and prints a table. Each tinygpt run starts with an empty
pre-token cache ("cold"), as for a fresh text; the "warm" column re-encodes with the cache full.
tiktoken (Rust) is imported only if installed; it builds its encoding from the same local rank
file, so nothing is downloaded. The two must produce identical ids, and the table says so.

Imports: the standard library and tinygpt.data.bpe.
"""

import argparse
import base64
import functools
import os
from pathlib import Path

from tinygpt.data.bpe import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, find_gpt2_vocab

from .timing import median_seconds

_SHARED = Path(os.environ.get("TINYGPT_SHARED_DATA")
               or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def mixed_text(target_bytes=1_000_000):
    """A multilingual text with emoji and code, about `target_bytes` long.

    Lines are numbered so that not every pre-token repeats, and it is built, not stored, so the
    benchmark needs no data file.
    """
    lines = [
        "The quick brown fox jumps over the lazy dog; it's 3.14 times faster than we'd guess.",
        "Le cœur a ses raisons que la raison ne connaît point — Blaise Pascal, 1670.",
        "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Ärger.",
        "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
        "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
        "素早い茶色の狐がのろまな犬を飛び越える。東京都渋谷区、2024年。",
        "敏捷的棕色狐狸跳过了懒狗。人工智能正在改变世界。",
        "빠른 갈색 여우가 게으른 개를 뛰어넘습니다.",
        "الثعلب البني السريع يقفز فوق الكلب الكسول.",
        "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
        "Emoji: 😀😃😄 👍🏽👎🏿 👨‍👩‍👧‍👦 🇫🇷🇯🇵🇧🇷 🎉🔥✨ ❤️‍🔥 ",
        ("def softmax(x, dim=-1):\n    e = np.exp(x - x.max(axis=dim, keepdims=True))\n"
         "    return e / e.sum(axis=dim, keepdims=True)  # numerically stable"),
        "for (int i = 0; i < n; ++i) { acc += a[i] * b[i]; }  /* dot product */",
        '{"name": "tinygpt", "version": "0.1.0", "deps": ["numpy", "regex"]}',
        "\t\tindented\twith\ttabs   and    runs     of      spaces\r\n",
    ]
    out, size, n = [], 0, 0
    while size < target_bytes:
        line = f"{n} {lines[n % len(lines)]}\n"
        out.append(line)
        size += len(line.encode("utf-8"))
        n += 1
    return "".join(out)


def _find_vocab(path):
    """The rank file to use: --vocab, else where BPETokenizer.gpt2() looks, else shared data."""
    if path is not None:
        return Path(path)
    try:
        return find_gpt2_vocab()
    except FileNotFoundError:
        fallback = _SHARED / "gpt2.tiktoken"
        if not fallback.is_file():
            raise
        return fallback


def _tiktoken_encoding(vocab_path):
    """tiktoken's GPT-2 encoding built from the local rank file, or None when not installed."""
    try:
        import tiktoken
    except ImportError:
        return None
    ranks = {}
    for line in vocab_path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench bpe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, default=None,
                        help="text to encode instead of tiny Shakespeare (shared data folder)")
    parser.add_argument("--vocab", type=Path, default=None,
                        help="gpt2.tiktoken rank file (default: as BPETokenizer.gpt2() finds it, "
                             "then the shared data folder)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--mixed-mb", type=float, default=1.0, help="size of the mixed text in MB")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.mixed_mb <= 0:
        parser.error(f"--mixed-mb must be > 0, got {args.mixed_mb}")

    vocab_path = _find_vocab(args.vocab)
    tok = BPETokenizer.from_tiktoken(vocab_path, {ENDOFTEXT: 50256})
    texts = []
    shakespeare = args.file or _SHARED / "tinyshakespeare.txt"
    if shakespeare.is_file():
        texts.append((shakespeare.name, shakespeare.read_text(encoding="utf-8")))
    else:
        print(f"skipping tiny Shakespeare: {shakespeare} not found (use --file)")
    texts.append(("mixed unicode + code", mixed_text(int(args.mixed_mb * 1e6))))
    reference = _tiktoken_encoding(vocab_path)

    header = (f"{'text':<24} {'MB':>6} {'tinygpt cold':>13} {'warm':>8} {'tiktoken':>9} "
              f"{'ratio':>6}  ids")
    print(f"GPT-2 BPE encode, MB/s (median of {args.runs} runs, 1 thread)")
    print(header)
    print("-" * len(header))
    for name, text in texts:
        mb = len(text.encode("utf-8")) / 1e6
        ours = functools.partial(tok.encode, text, allowed_special="all")
        cold = median_seconds(ours, args.runs, warmup=0, before=tok._cache.clear)  # an empty cache each run
        warm = median_seconds(ours, args.runs, warmup=0)
        row = f"{name[:24]:<24} {mb:6.2f} {mb / cold:13.2f} {mb / warm:8.2f}"
        if reference is None:
            row += f" {'-':>9} {'-':>6}  (pip install tiktoken to compare)"
        else:
            theirs = functools.partial(reference.encode, text, allowed_special="all")
            ref = median_seconds(theirs, args.runs, warmup=0)
            same = ours() == theirs()
            row += f" {mb / ref:9.2f} {ref / cold:6.2f}  {'identical' if same else 'DIFFERENT'}"
        print(row)
    if reference is not None:
        print("ratio = tinygpt cold MB/s / tiktoken MB/s")


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("bpe")
