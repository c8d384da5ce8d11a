"""An acceptability task made from tiny Shakespeare (word order, spelling or word choice),
as 2-way multiple choice (floor 4, data).

CoLA (the Corpus of Linguistic Acceptability, one of GPT-1's tasks) asks whether a
sentence is well formed. `make_acceptability` builds that kind of question from a play in
tiny Shakespeare's layout (speeches separated by blank lines, each a `NAME:` line and then
the lines spoken), as a pair to choose from:

    story    "" (nothing: the line is judged alone)
    endings  a real line of a speech and a corrupted copy of it, in a random order;
             `label` is the real line's index

The corruption (`kind`) touches plain words only, words of lowercase letters a-z with
nothing attached (no capital, punctuation or apostrophe), so what a line starts and ends
with and where its punctuation stands never change: no surface cue tells the lines apart.

    "swap"     two plain words of different spellings trade places: the same characters
               in another order
    "shuffle"  the plain words trade places at random (a permutation that changes the
               line): the same characters, the line's words in a scrambled order
    "misspell" the letters of one plain word of 4 letters or more are scrambled into a
               string that is no word of the training speeches: the same characters, one
               word misspelt (the easiest for a character model, which learns spelling
               first)
    "replace"  one plain word is replaced by a different plain word of the same length
               drawn from the training speeches, as often as each occurs there (the same
               length and the words' own frequencies: no cue in the line's length or its
               letters' statistics); an easier task: a random word rarely fits

Splits are made of whole speeches: the speeches are shuffled with `seed` and cut into
train / validation / test (80 / 5 / 15 % by default). Each usable line of a speech (at
least `min_words` words, 4 by default, and a plain word the kind can change: two of
different spellings for a swap or shuffle, one of 4+ letters to misspell, one whose length
has another spelling to replace) gives one example; `n_train`, `n_val`, `n_test` keep a
seeded random subset of each split (None keeps every line). With `last_word` (misspell and
replace only) the word changed is the last plain word that can be. The labels are
balanced: each split's labels are a shuffle of as many 0 as 1 (one more 0 when odd), so
the majority-class baseline is 50% (or half an example more).

The pre-training text is the training speeches in their original order, exactly as the
file has them (speaker lines included), as `tinygpt.data.cloze` writes it. Validation and
test examples are kept only when their line is not also a line of the pre-training text,
and when every character of theirs occurs in it: a model pre-trained on that text has seen
no real line of them. Everything is drawn from one seeded generator, so a text and its
settings give the same task on every machine.

The task is saved and read with `tinygpt.data.cloze.save_task` / `load_task` (the same
files: train.jsonl, val.jsonl, test.jsonl, pretrain.txt, task.json), so `python -m tinygpt
finetune --task FOLDER` fine-tunes on it.

    >>> task = make_acceptability(load_text("shakespeare"), kind="swap", seed=0)
    >>> task.test[0].endings, task.test[0].label        # the real line and its swap

Imports: numpy, the standard library and tinygpt.data.cloze.
"""

import re

import numpy as np

from .. import validate
from .cloze import SPLITS, ClozeExample, ClozeTask, split_speeches

KINDS = ("swap", "shuffle", "replace", "misspell")
# What a line needs for each kind of change (`_usable`), as the error for none says it.
NEEDS = {"swap": "two of them plain lowercase words of different spellings",
         "shuffle": "two of them plain lowercase words of different spellings",
         "replace": "one of them a plain lowercase word whose length has another spelling "
                    "in the training speeches",
         "misspell": "one of them a plain lowercase word of 4 letters or more, two of them "
                     "different"}
PLAIN_WORD = re.compile(r"[a-z]+")


def make_acceptability(text, kind="swap", seed=0, fractions=(0.8, 0.05, 0.15), min_words=4,
                       n_train=None, n_val=None, n_test=None, last_word=False):
    """The acceptability task of a play text (see the module docstring); a ClozeTask."""
    _check_arguments(kind, seed, min_words, n_train, n_val, n_test)
    if not isinstance(last_word, bool) or (last_word and kind not in ("misspell", "replace")):
        raise ValueError(f"last_word must be True or False, and True only with kind "
                         f"'misspell' or 'replace' (one word changed), got {last_word!r} with "
                         f"kind {kind!r}")
    rng = np.random.default_rng(seed)
    all_speeches, members, pretrain_text, seen_lines, seen_chars = split_speeches(
        text, rng, fractions, "an acceptability task")
    # The replacement words by length: every plain word of the training speeches, in text
    # order, as often as it occurs (a draw follows the words' frequencies).
    vocabulary = {}
    for s in sorted(members["train"]):
        for line in all_speeches[s][1]:
            for word in line.split(" "):
                if _plain(word):
                    vocabulary.setdefault(len(word), []).append(word)
    # A word can be replaced when another spelling of its length exists.
    replaceable = {n for n, words in vocabulary.items() if len(set(words)) >= 2}
    words_seen = {word for words in vocabulary.values() for word in words}

    wanted = {"train": n_train, "val": n_val, "test": n_test}
    task = {}
    for split in SPLITS:
        lines = [line for s in sorted(members[split]) for line in all_speeches[s][1]
                 if _usable(line, min_words, kind, replaceable)
                 and (split == "train" or (line not in seen_lines and set(line) <= seen_chars))]
        if wanted[split] is not None:
            if len(lines) < wanted[split]:
                raise ValueError(f"the {split} split has {len(lines)} usable lines, fewer than "
                                 f"the {wanted[split]} examples asked for; ask for fewer or "
                                 f"give it a larger fraction of the speeches")
            keep = np.sort(rng.choice(len(lines), size=wanted[split], replace=False))
            lines = [lines[i] for i in keep]
        if not lines:
            raise ValueError(f"the {split} split has no line of at least {min_words} words "
                             f"({NEEDS[kind]}) that is new to the pre-training text; "
                             f"lower --min_words or use a longer text")
        labels = rng.permutation(np.arange(len(lines)) % 2)         # balanced 0s and 1s
        examples = []
        for line, label in zip(lines, labels):
            wrong = (_swap(rng, line) if kind == "swap" else _shuffle(rng, line)
                     if kind == "shuffle" else _misspell(rng, line, words_seen, last_word)
                     if kind == "misspell"
                     else _replace(rng, line, vocabulary, replaceable, last_word))
            endings = [wrong, wrong]
            endings[int(label)] = line
            examples.append(ClozeExample("", endings, int(label)))
        task[split] = examples
    info = {"task": "acceptability", "kind": kind, "seed": seed, "fractions": list(fractions),
            "min_words": min_words, "last_word": last_word, "n_train": n_train,
            "n_val": n_val, "n_test": n_test, "n_choices": 2, "speeches": len(all_speeches),
            **{f"{split}_speeches": len(members[split]) for split in SPLITS},
            **{f"{split}_examples": len(task[split]) for split in SPLITS},
            "pretrain_chars": len(pretrain_text)}
    return ClozeTask(task["train"], task["val"], task["test"], pretrain_text, info)


def _plain(word):
    return PLAIN_WORD.fullmatch(word) is not None


def _usable(line, min_words, kind, replaceable):
    """Whether `line` can be corrupted: min_words words or more (single spaces between
    them), two of them plain words of different spellings (swap) or one plain word of a
    length in `replaceable` (replace)."""
    words = line.split(" ")
    if len(words) < min_words or any(not w for w in words):
        return False
    if kind == "replace":
        return any(_plain(w) and len(w) in replaceable for w in words)
    if kind == "misspell":
        return any(_misspellable(w) for w in words)
    return len({w for w in words if _plain(w)}) >= 2


def _swap(rng, line):
    """`line` with two of its plain words, different in spelling, trading places."""
    words = line.split(" ")
    plain = [i for i, w in enumerate(words) if _plain(w)]
    while True:
        i, j = (plain[int(k)] for k in rng.choice(len(plain), size=2, replace=False))
        if words[i] != words[j]:
            words[i], words[j] = words[j], words[i]
            return " ".join(words)


def _shuffle(rng, line):
    """`line` with its plain words in another order (a different line)."""
    words = line.split(" ")
    plain = [i for i, w in enumerate(words) if _plain(w)]
    while True:
        order = rng.permutation(plain)
        shuffled = list(words)
        for i, j in zip(plain, order):
            shuffled[i] = words[int(j)]
        if shuffled != words:
            return " ".join(shuffled)


def _misspell(rng, line, words_seen, last_word=False):
    """`line` with the letters of one plain word (4 letters or more, two of them different;
    the last such word with last_word) scrambled into a string not in `words_seen`."""
    words = line.split(" ")
    plain = [i for i, w in enumerate(words) if _misspellable(w)]
    plain = plain[-1:] if last_word else plain
    for _ in range(100):
        i = plain[int(rng.integers(len(plain)))]
        letters = list(words[i])
        scrambled = "".join(letters[int(k)] for k in rng.permutation(len(letters)))
        if scrambled != words[i] and scrambled not in words_seen:
            words[i] = scrambled
            return " ".join(words)
    raise ValueError(f"no word of {line!r} scrambles into a non-word")   # (never seen)


def _misspellable(word):
    """Whether `word` can be scrambled into another string: plain, 4 letters or more, two
    of them different."""
    return _plain(word) and len(word) >= 4 and len(set(word)) >= 2


def _replace(rng, line, vocabulary, replaceable, last_word=False):
    """`line` with one of its plain words (the last one that can be, with last_word)
    replaced by a different word of the same length drawn from `vocabulary` ({length:
    [words]}); `replaceable`: the lengths with two spellings or more there."""
    words = line.split(" ")
    plain = [i for i, w in enumerate(words) if _plain(w) and len(w) in replaceable]
    plain = plain[-1:] if last_word else plain
    i = plain[int(rng.integers(len(plain)))]
    candidates = vocabulary[len(words[i])]
    while True:
        word = candidates[int(rng.integers(len(candidates)))]
        if word != words[i]:
            words[i] = word
            return " ".join(words)


def _check_arguments(kind, seed, min_words, n_train, n_val, n_test):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    validate.integer("seed", seed, minimum=0)
    validate.integer("min_words", min_words, minimum=2)
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        validate.integer(name, value, minimum=1, none_ok=True)      # None: every usable line
