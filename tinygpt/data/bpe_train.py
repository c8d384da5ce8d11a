"""Training a byte-level BPE vocabulary (floor 4, data): `learn_ranks`, which
`BPETokenizer.train` calls.

Imports: the standard library, `regex`, tinygpt.validate.
"""

import heapq
import itertools
from collections import Counter

import regex

from .. import validate


def learn_ranks(text, vocab_size, pattern, verbose=False):
    """The ranks (bytes -> rank, the rank also the id) of a byte-level BPE vocabulary of
    `vocab_size` regular tokens learned from `text`, split into pre-tokens by the regular
    expression `pattern`.

    Starts from the 256 byte tokens and repeatedly merges the most frequent adjacent pair
    within pre-tokens, until `vocab_size` tokens exist or no pair is left (the vocabulary is
    then smaller). Ties go to the pair with the smallest (left id, right id). `BPETokenizer.train`
    then appends "<|endoftext|>" as special token id `vocab_size`, so
    `tok.vocab_size == vocab_size + 1`, as GPT-2 has 50256 regular tokens plus end-of-text.

    Pre-token frequencies are counted first and pairs counted per distinct pre-token times its
    frequency; each merge updates only the pre-tokens that contain the pair.
    """
    validate.integer("vocab_size", vocab_size)
    if vocab_size < 256:
        raise ValueError(f"vocab_size {vocab_size} is below 256: a byte-level BPE needs the "
                         f"256 byte tokens before any merge")
    if not isinstance(text, str):
        raise TypeError(f"train expects a str, got {type(text).__name__}")

    counts = Counter(regex.findall(pattern, text))
    words = [list(piece.encode("utf-8")) for piece in counts]   # token ids, bytes at first
    freqs = list(counts.values())
    vocab = [bytes([b]) for b in range(256)]                     # id -> bytes
    known = set(vocab)

    pair_counts = Counter()
    where = {}  # pair -> indices of words that contain it (may hold stale indices)
    for w, word in enumerate(words):
        for pair in itertools.pairwise(word):
            pair_counts[pair] += freqs[w]
            where.setdefault(pair, set()).add(w)
    # Max-heap by count through negation; (left, right) in the key makes ties deterministic.
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    banned = set()

    while len(vocab) < vocab_size and heap:
        negcount, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b)) != -negcount or (a, b) in banned:
            continue  # stale entry: the count changed and a fresher entry was pushed
        merged = vocab[a] + vocab[b]
        if merged in known:
            # Two different pairs can spell the same bytes; a rank file holds each byte
            # string once, so the later pair is not learned.
            banned.add((a, b))
            continue
        new_id = len(vocab)
        vocab.append(merged)
        known.add(merged)
        if verbose:
            print(f"merge {new_id - 255}/{vocab_size - 256}: {a} + {b} -> {new_id} "
                  f"{merged!r} ({-negcount} occurrences)")

        delta = Counter()
        for w in where.pop((a, b), ()):
            word = words[w]
            new_word, i = [], 0
            while i < len(word):    # merge left to right, non-overlapping ("aaa" -> aa a)
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    new_word.append(new_id)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            if len(new_word) == len(word):
                continue            # stale index: this word no longer has the pair
            f = freqs[w]
            for pair in itertools.pairwise(word):
                delta[pair] -= f
            for pair in itertools.pairwise(new_word):
                delta[pair] += f
                where.setdefault(pair, set()).add(w)
            words[w] = new_word
        for pair, d in delta.items():
            if d == 0:
                continue
            c = pair_counts[pair] + d
            if c > 0:
                pair_counts[pair] = c
                heapq.heappush(heap, (-c, *pair))
            else:
                del pair_counts[pair]
    if verbose and len(vocab) < vocab_size:
        print(f"stopped at {len(vocab)} tokens: no pair left to merge")
    return {token: i for i, token in enumerate(vocab)}
