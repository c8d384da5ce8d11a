"""tinygpt.data.bpe: round trips, GPT-2's known encodings, loaders, training, saving, errors.

Tests that need the real GPT-2 vocabulary or tiny Shakespeare read them from the shared data
folder (../shared/data from the repository root, or $TINYGPT_SHARED_DATA) and skip without it.
Tests against tiktoken skip when it is not installed.
"""

import base64
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.data.bpe import GPT2_PATTERN, BPETokenizer, byte_pair_merge, bytes_to_unicode

REPO_ROOT = Path(__file__).resolve().parents[2]   # tests/data/test_bpe.py -> the repository
SHARED = Path(os.environ.get("TINYGPT_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
GPT2_FILE = SHARED / "gpt2.tiktoken"
SHAKESPEARE = SHARED / "tinyshakespeare.txt"
needs_gpt2 = pytest.mark.skipif(not GPT2_FILE.is_file(),
                                reason=f"GPT-2 vocabulary not found at {GPT2_FILE}")

TRAIN_TEXT = """\
First Citizen: Before we proceed any further, hear me speak. We're all resolved rather to die
than to famish? They'll say it's 1234 times 5678, and I'd say you've got 99 problems.
def encode(self, text):\n    return [self.vocab[c] for c in text if c != ' ']  # 42
Ünïcödé: café, naïve, Straße, 日本語のテキスト, Привет мир, مرحبا بالعالم, 😀😀 👍🏽 🇫🇷
""" * 3

# Pieces that exercise the pre-tokenizer: contractions, whitespace runs, emoji sequences,
# combining marks, control and invisible characters, code.
FRAGMENTS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "don't", "I'm", " ", "   ", "\n",
             "\n\n", "\t", "\r\n", " \u00a0", "\u3000", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "é", "e\u0301",
             "日本語", "Ελληνικά", "Привет", "مرحبا", "हिन्दी", "123", " 4567", "3.14", "!!!", "...",
             "\x00", "\x07", "\u200b", "\ufeff", "<|endoftext", "|>", "def f(x):\n    return x**2"]
texts = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=30).map("".join))
# For comparisons with tiktoken: characters whose Unicode category is decades old, so that
# the `regex` module and tiktoken's Rust regex (which may follow different Unicode versions)
# classify them alike.
STABLE_ALPHABET = ("".join(map(chr, range(32, 127))) + " \t\n\r\x0b\x0c\x00\x1b\u00a0\u2003"
                   "\u3000éàüßñøÆçÅ αβγΔΩ жЖщЯ 日本語中文字 한국어 مرحبا हिन्दी ٣४৫ ½² 😀🎉👍🏽🇫🇷"
                   "\u200d\u0301\u200b\ufeff")
stable_texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(STABLE_ALPHABET, max_size=8)),
                        max_size=30).map("".join)


@pytest.fixture(scope="module")
def small():
    """A tokenizer trained on TRAIN_TEXT: 256 bytes + 150 merges + <|endoftext|>."""
    return BPETokenizer.train(TRAIN_TEXT, 406)


@functools.cache
def load_gpt2():
    return BPETokenizer.from_tiktoken(GPT2_FILE)


@pytest.fixture(scope="module")
def gpt2():
    if not GPT2_FILE.is_file():
        pytest.skip(f"GPT-2 vocabulary not found at {GPT2_FILE}")
    return load_gpt2()


def read_rank_file(path):
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merges_from_ranks(ranks):
    """Recover vocab.bpe's merges from a rank table: a token of rank r is what BPE makes of its
    bytes using only the tokens ranked below r, which must leave exactly two parts."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while True:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        assert len(parts) == 2, (token, parts)
        merges.append(parts)
    return merges


def write_encoder_files(ranks, specials, folder):
    """Write OpenAI-style encoder.json + vocab.bpe for a rank table (ids = ranks)."""
    to_str = bytes_to_unicode()

    def spell(token):
        return "".join(to_str[b] for b in token)

    encoder = {spell(t): r for t, r in ranks.items()} | specials
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{spell(a)} {spell(b)}" for a, b in merges_from_ranks(ranks)]
    (folder / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "encoder.json", folder / "vocab.bpe"


# ------------------------------------------------------------------------------- round trips

def test_bytes_to_unicode_is_gpt2s():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and all(c.isprintable() for c in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]  # GPT-2's id order


@settings(deadline=None, max_examples=300)
@given(texts)
def test_round_trip_small(small, text):
    ids = small.encode(text, allowed_special="all")
    assert all(0 <= i < small.vocab_size for i in ids)
    assert small.decode(ids) == text
    assert small.decode_bytes(ids) == text.encode("utf-8")


@needs_gpt2
@settings(deadline=None, max_examples=300)
@given(texts)
def test_round_trip_gpt2(gpt2, text):
    assert gpt2.decode(gpt2.encode(text, allowed_special="all")) == text


# ------------------------------------------------------------------------------- GPT-2 itself

@needs_gpt2
@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    (" the", [262]),
    ("Hello, world!", [15496, 11, 995, 0]),  # "!" is byte token 0, "," is 44 - 33 = 11
    ("I'm", [40, 1101]),                     # "I" = 73 - 33; the contraction splits off
    ("   x", [220, 220, 2124]),              # space is id 220; \s+(?!\S) leaves " x"
    ("😀", [47249, 222]),                    # 4 bytes: a 3-byte token and byte 0x80 (id 222)
])
def test_known_gpt2_encodings(gpt2, text, ids):
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


@needs_gpt2
def test_gpt2_end_of_text(gpt2):
    assert gpt2.eot_token == 50256 and gpt2.vocab_size == gpt2.n_vocab == 50257
    assert gpt2.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert gpt2.encode("a<|endoftext|>b", allowed_special="all") == [64, 50256, 65]
    assert gpt2.decode([50256]) == "<|endoftext|>"


@pytest.fixture(scope="module")
def reference():
    """tiktoken's GPT-2 encoding, the reference implementation."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is an optional cross-check")
    if not GPT2_FILE.is_file():
        pytest.skip(f"GPT-2 vocabulary not found at {GPT2_FILE}")
    # Built from the local rank file: tiktoken.get_encoding("gpt2") would download it.
    return tiktoken.Encoding(name="gpt2-local", pat_str=GPT2_PATTERN,
                             mergeable_ranks=read_rank_file(GPT2_FILE),
                             special_tokens={"<|endoftext|>": 50256})


@settings(deadline=None, max_examples=300)
@given(stable_texts)
def test_same_ids_as_tiktoken(gpt2, reference, text):
    assert gpt2.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def test_same_ids_as_tiktoken_on_shakespeare(gpt2, reference):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {SHAKESPEARE}")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    assert gpt2.encode(text) == reference.encode(text)


@settings(deadline=None, max_examples=200)
@given(st.lists(st.sampled_from([b"a", b"b", b"ab", b" ", b"e", b"th", b"\xf0\x9f\x98\x80", b"1"]),
                max_size=80).map(b"".join))
def test_heap_merge_matches_list_merge(small, data):
    # Long pieces take the heap path; both paths must give tiktoken's merge order exactly.
    assert small._merge_heap(data) == byte_pair_merge(small._ranks, data)
    if GPT2_FILE.is_file():
        gpt2 = load_gpt2()
        assert gpt2._merge_heap(data) == byte_pair_merge(gpt2._ranks, data)


def test_long_piece_is_fast_and_exact(small):
    text = "a" * 20_000 + " " + "ab" * 10_000   # two huge pre-tokens take the heap path
    ids = small.encode(text)
    assert small.decode(ids) == text


# ------------------------------------------------------------------------------- loaders

def test_from_encoder_files_matches_from_tiktoken_small(small, tmp_path):
    d = small.to_dict()
    ranks = {base64.b64decode(t): r for r, t in enumerate(d["tokens"])}
    encoder_json, vocab_bpe = write_encoder_files(ranks, d["special_tokens"], tmp_path)
    tiktoken_file = tmp_path / "small.tiktoken"
    lines = [f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()]
    tiktoken_file.write_text("".join(lines))

    from_files = BPETokenizer.from_encoder_files(encoder_json, vocab_bpe)
    from_ranks = BPETokenizer.from_tiktoken(tiktoken_file)
    assert from_files.vocab_size == from_ranks.vocab_size == small.vocab_size
    assert from_files.eot_token == from_ranks.eot_token == small.eot_token
    for text in [TRAIN_TEXT, "We're resolved: café 😀\n\n  x", "<|endoftext|>"]:
        ids = small.encode(text, allowed_special="all")
        assert from_files.encode(text, allowed_special="all") == ids
        assert from_ranks.encode(text, allowed_special="all") == ids


@needs_gpt2
def test_from_encoder_files_matches_from_tiktoken_gpt2(gpt2, tmp_path):
    encoder_json, vocab_bpe = write_encoder_files(read_rank_file(GPT2_FILE),
                                                  {"<|endoftext|>": 50256}, tmp_path)
    from_files = BPETokenizer.from_encoder_files(encoder_json, vocab_bpe)
    assert from_files.vocab_size == 50257 and from_files.eot_token == 50256
    text = TRAIN_TEXT + (SHAKESPEARE.read_text(encoding="utf-8")[:100_000]
                         if SHAKESPEARE.is_file() else "")
    assert from_files.encode(text) == gpt2.encode(text)


def test_from_tiktoken_rejects_bad_lines(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match=r"bad.tiktoken:2"):
        BPETokenizer.from_tiktoken(bad)
    few = tmp_path / "few.tiktoken"
    few.write_text("IQ== 0\n")
    with pytest.raises(ValueError, match="all 256 single bytes"):
        BPETokenizer.from_tiktoken(few)


def test_gpt2_lookup_reports_how_to_supply_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGPT_GPT2_VOCAB", str(tmp_path / "nowhere.tiktoken"))
    with pytest.raises(FileNotFoundError, match="TINYGPT_GPT2_VOCAB"):
        BPETokenizer.gpt2()
    monkeypatch.delenv("TINYGPT_GPT2_VOCAB")
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as info:
        BPETokenizer.gpt2()
    message = str(info.value)
    assert str(tmp_path / "cache" / "gpt2.tiktoken") in message and "TINYGPT_GPT2_VOCAB" in message
    monkeypatch.delenv("TINYGPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "tinygpt" / "gpt2.tiktoken"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        BPETokenizer.gpt2()


@needs_gpt2
def test_gpt2_lookup_finds_the_file(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYGPT_GPT2_VOCAB", raising=False)
    (tmp_path / "gpt2.tiktoken").symlink_to(GPT2_FILE)
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path))
    assert BPETokenizer.gpt2().encode("Hello world") == [15496, 995]
    monkeypatch.setenv("TINYGPT_GPT2_VOCAB", str(GPT2_FILE))
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "empty"))
    assert BPETokenizer.gpt2().eot_token == 50256


# ------------------------------------------------------------------------------- special tokens

def test_special_token_needs_permission(small):
    with pytest.raises(ValueError, match=r"<\|endoftext\|>.*allowed_special"):
        small.encode("hello <|endoftext|> there")
    eot = small.eot_token
    assert eot == 406
    assert eot in small.encode("hello <|endoftext|> there", allowed_special={"<|endoftext|>"})
    assert eot not in small.encode_ordinary("hello <|endoftext|> there")
    assert small.decode(small.encode_ordinary("<|endoftext|>")) == "<|endoftext|>"
    assert small.encode("a<|endoftext|>", disallowed_special=()) == small.encode_ordinary(
        "a<|endoftext|>")
    with pytest.raises(ValueError, match="not special tokens"):
        small.encode("x", allowed_special={"<|im_start|>"})


# ------------------------------------------------------------------------------- decode

def test_decode_partial_multibyte_is_replaced(small):
    euro = "€".encode()                        # e2 82 ac; byte b has id b in `small`
    assert small.decode([ord("a"), euro[0], euro[1]]) == "a\ufffd"
    assert small.decode_bytes([euro[0], euro[1]]) == euro[:2]
    assert small.decode([euro[2], ord("b")]) == "\ufffdb"
    assert small.decode(np.array([euro[0], euro[1], euro[2]])) == "€"


def test_decode_rejects_bad_ids(small):
    for bad in (-1, small.vocab_size, 10**9):
        with pytest.raises(ValueError, match=rf"token id {bad} .*0\.\.{small.vocab_size - 1}"):
            small.decode([65, bad])
    with pytest.raises(TypeError, match="ints"):
        small.decode([1.5])
    assert small.decode([]) == ""


# ------------------------------------------------------------------------------- training

def test_train_learns_the_most_frequent_pair_first():
    tok = BPETokenizer.train("ab ab ab cd", 258)
    # Pre-tokens "ab", " ab" x2, " cd": (a, b) occurs 3 times, then (" ", "ab") twice.
    assert tok.token_bytes(256) == b"ab" and tok.token_bytes(257) == b" ab"
    assert tok.encode("ab ab") == [256, 257] and tok.eot_token == 258


def test_train_is_deterministic_and_sized(small):
    again = BPETokenizer.train(TRAIN_TEXT, 406)
    assert again.to_dict() == small.to_dict()
    assert small.vocab_size == 407
    assert len(small.encode(TRAIN_TEXT)) < len(TRAIN_TEXT.encode("utf-8")) / 2


def test_train_stops_when_no_pairs_are_left(capsys):
    tok = BPETokenizer.train("abab", 1000, verbose=True)
    assert tok.vocab_size == 258 + 1        # ab, abab, then nothing left to merge
    assert "merge 1/744" in capsys.readouterr().out


def test_train_rejects_small_vocab():
    with pytest.raises(ValueError, match="vocab_size 255 is below 256"):
        BPETokenizer.train("text", 255)
    assert BPETokenizer.train("text", 256).vocab_size == 257


# ------------------------------------------------------------------------------- saving

def test_save_load_round_trip(small, tmp_path):
    path = tmp_path / "tok.json"
    small.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.to_dict() == small.to_dict()
    assert loaded.encode(TRAIN_TEXT) == small.encode(TRAIN_TEXT)
    rebuilt = BPETokenizer.from_dict(json.loads(json.dumps(small.to_dict())))
    assert rebuilt.encode(TRAIN_TEXT, allowed_special="all") == small.encode(TRAIN_TEXT)
    assert os.listdir(tmp_path) == ["tok.json"]


@pytest.mark.parametrize("content, message", [
    ("not json at all", "is not valid JSON"),
    ('{"vocab": [1, 2]}', "expected format 'tinygpt-bpe'"),
    ("[1, 2, 3]", "not a tinygpt BPE tokenizer"),
    ('{"format": "tinygpt-bpe", "version": 99, "tokens": []}', "version 99"),
    ('{"format": "tinygpt-bpe", "version": 1, "tokens": ["!!!"]}', "base64"),
    ('{"format": "tinygpt-bpe", "version": 1, "tokens": ["QQ=="]}', "all 256 single bytes"),
    ('{"format": "tinygpt-bpe", "version": 1, "tokens": "QQ=="}', "list of base64"),
])
def test_load_rejects_foreign_or_corrupt_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_load_rejects_colliding_ids(small):
    d = small.to_dict()
    d["special_tokens"] = {"<|endoftext|>": 65}
    with pytest.raises(ValueError, match="id 65 is used twice"):
        BPETokenizer.from_dict(d)
    d["special_tokens"] = {"<|endoftext|>": 10**12}
    with pytest.raises(ValueError, match="nearly dense"):
        BPETokenizer.from_dict(d)
    d = small.to_dict()
    d["tokens"].append(d["tokens"][0])
    with pytest.raises(ValueError, match="appears twice"):
        BPETokenizer.from_dict(d)


def test_byte_pair_merge_below_a_rank_finds_the_merge_that_made_a_token():
    ranks = {bytes([b]): b for b in range(256)}
    for token in (b"ab", b"abc", b"bc", b"abcd"):
        ranks[token] = len(ranks)
    assert byte_pair_merge(ranks, b"abcd") == [b"abcd"]
    # With only the tokens older than "abcd": the two parts it was merged from.
    assert byte_pair_merge(ranks, b"abcd", max_rank=ranks[b"abcd"]) == [b"abc", b"d"]
    assert byte_pair_merge(ranks, b"abc", max_rank=ranks[b"abc"]) == [b"ab", b"c"]
    assert byte_pair_merge(ranks, b"abcd", max_rank=256) == [b"a", b"b", b"c", b"d"]
