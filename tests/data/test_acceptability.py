"""The acceptability task: seeded splits of whole speeches, the corruptions, balanced labels,
what the pre-training text leaves out, the files and the generator command."""

from collections import Counter

import numpy as np
import pytest

from tinygpt.cli import main as cli_main
from tinygpt.data import load_text
from tinygpt.data.acceptability import make_acceptability
from tinygpt.data.cloze import load_task, save_task, speeches


def play(n_speeches=120, seed=0):
    """A text in tiny Shakespeare's layout: 'NAME:' then 1 to 9 lines of 5 words and a
    tag naming the speech and line, blank-line separated. Every line is distinct."""
    rng = np.random.default_rng(seed)
    words = ["lord", "thou", "hath", "night", "king", "sweet", "death", "love", "speak"]
    blocks = []
    for s in range(n_speeches):
        lines = [f"{' '.join(rng.choice(words, 5))} {s}.{i}" for i in range(rng.integers(1, 10))]
        blocks.append(f"{rng.choice(['ROMEO', 'JULIET', 'First Citizen'])}:\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def origins(text):
    """line -> index of its speech."""
    return {line: s for s, (_, lines) in enumerate(speeches(text)) for line in lines}


def real_and_wrong(e):
    return e.endings[e.label], e.endings[1 - e.label]


@pytest.mark.parametrize("kind", ["swap", "shuffle", "replace", "misspell"])
def test_splits_are_whole_speeches_and_disjoint(kind):
    text = play()
    task = make_acceptability(text, kind=kind, seed=3)
    origin = origins(text)
    speeches_of = {}
    for split in ("train", "val", "test"):
        examples = task.split(split)
        assert examples and all(e.story == "" and len(e.endings) == 2 for e in examples)
        speeches_of[split] = {origin[real_and_wrong(e)[0]] for e in examples}
    assert not speeches_of["train"] & speeches_of["val"]
    assert not speeches_of["train"] & speeches_of["test"]
    assert not speeches_of["val"] & speeches_of["test"]
    # Every usable line of a split's speeches is an example (no n_* given).
    by_speech = speeches(text)
    for split in ("train", "val", "test"):
        lines = sorted(line for s in speeches_of[split] for line in by_speech[s][1])
        assert sorted(real_and_wrong(e)[0] for e in task.split(split)) == lines


def test_a_swap_moves_two_different_words_and_keeps_the_characters():
    task = make_acceptability(play(), kind="swap", seed=0)
    for e in task.train + task.val + task.test:
        real, wrong = real_and_wrong(e)
        a, b = real.split(" "), wrong.split(" ")
        moved = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(moved) == 2, (real, wrong)
        i, j = moved
        assert (a[i], a[j]) == (b[j], b[i]) and a[i] != a[j]
        assert sorted(real) == sorted(wrong)


@pytest.mark.parametrize("kind", ["swap", "shuffle", "replace", "misspell"])
def test_only_plain_lowercase_words_change(kind):
    # Capitalised, punctuated and apostrophised words stay where they are.
    speech = ("KING:\nThe lord of night, thou know'st, hath death N{0}\n"
              "Sweet love and night speak, my king! N{0}\n")
    task = make_acceptability("\n".join(speech.format('x' * i) for i in range(12)), kind=kind,
                              fractions=(0.5, 0.25, 0.25),
                              seed=0)
    for e in task.train + task.val + task.test:
        real, wrong = real_and_wrong(e)
        for a, b in zip(real.split(" "), wrong.split(" ")):
            assert a == b or (a.isalpha() and a.islower() and b.isalpha() and b.islower())
    assert {real_and_wrong(e)[0].rsplit(" ", 1)[0] for e in task.train} == {
        "The lord of night, thou know'st, hath death", "Sweet love and night speak, my king!"}


def training_words(task):
    return {w for line in task.pretrain_text.split("\n") if not line.endswith(":")
            for w in line.split()}


def test_a_replacement_is_one_word_of_the_training_speeches_of_the_same_length():
    task = make_acceptability(play(), kind="replace", seed=0)
    vocabulary = training_words(task)
    for e in task.train + task.test:
        real, wrong = real_and_wrong(e)
        a, b = real.split(" "), wrong.split(" ")
        changed = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(changed) == 1 and len(a) == len(b)
        assert b[changed[0]] in vocabulary and len(b[changed[0]]) == len(a[changed[0]])


def test_a_shuffle_reorders_the_words_and_keeps_the_characters():
    task = make_acceptability(play(), kind="shuffle", seed=0)
    moved_counts = set()
    for e in task.train + task.test:
        real, wrong = real_and_wrong(e)
        a, b = real.split(" "), wrong.split(" ")
        assert real != wrong and sorted(a) == sorted(b)
        moved_counts.add(sum(x != y for x, y in zip(a, b)))
    assert max(moved_counts) > 2                  # more than a swap, at times


def test_a_misspelling_scrambles_one_word_into_a_non_word():
    task = make_acceptability(play(), kind="misspell", seed=0)
    vocabulary = training_words(task)
    for e in task.train + task.test:
        real, wrong = real_and_wrong(e)
        a, b = real.split(" "), wrong.split(" ")
        changed = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(changed) == 1 and sorted(real) == sorted(wrong)
        word, scrambled = a[changed[0]], b[changed[0]]
        assert sorted(word) == sorted(scrambled) and len(word) >= 4
        assert scrambled not in vocabulary


def test_labels_are_balanced_in_every_split():
    task = make_acceptability(play(), seed=1, n_train=201, n_val=10, n_test=30)
    for split, n in (("train", 201), ("val", 10), ("test", 30)):
        counts = Counter(e.label for e in task.split(split))
        assert sum(counts.values()) == n
        assert counts[0] == (n + 1) // 2 and counts[1] == n // 2, (split, counts)


def test_pretraining_text_holds_no_held_out_line():
    text = play(seed=2)
    task = make_acceptability(text, seed=4)
    pretrain_lines = set(task.pretrain_text.split("\n"))
    for e in task.val + task.test:
        assert real_and_wrong(e)[0] not in pretrain_lines
    # ...and is the training speeches, whole and in the text's order.
    origin = origins(text)
    train_speeches = sorted({origin[real_and_wrong(e)[0]] for e in task.train})
    expected = "\n\n".join(speaker + "\n" + "\n".join(lines) for s, (speaker, lines)
                           in enumerate(speeches(text)) if s in train_speeches) + "\n"
    assert task.pretrain_text == expected


def test_held_out_lines_repeated_in_training_speeches_or_with_new_characters_are_left_out():
    text = play(n_speeches=60, seed=5)
    a_train_line = real_and_wrong(make_acceptability(text, seed=0).train[0])[0]
    # Append speeches repeating a training line, each with a line of a character of its
    # own: whichever split they fall in, no held-out example may hold either line.
    letters = [chr(0x3B1 + i) for i in range(20)]
    extra = "".join(f"\nKING:\n{a_train_line}\nlord thou hath night {c}\n" for c in letters)
    task = make_acceptability(text + extra, seed=0)
    unseen = [c for c in letters if c not in task.pretrain_text]
    assert unseen and a_train_line in task.pretrain_text        # the cases occur
    for e in task.val + task.test:
        real = real_and_wrong(e)[0]
        assert real != a_train_line and set(real) <= set(task.pretrain_text)


def test_the_same_seed_gives_the_same_task_and_another_seed_another():
    text = play()
    first = make_acceptability(text, seed=7, n_train=100)
    again = make_acceptability(text, seed=7, n_train=100)
    other = make_acceptability(text, seed=8, n_train=100)
    assert first.train == again.train and first.test == again.test
    assert first.pretrain_text == again.pretrain_text and first.info == again.info
    assert first.test != other.test


def test_bad_arguments_are_refused_naming_them():
    text = play()
    for kwargs, message in (({"kind": "scramble"}, "kind must be one of swap, shuffle"),
                            ({"seed": -1}, "seed must be an int >= 0"),
                            ({"seed": True}, "seed must be an int"),
                            ({"min_words": 1}, "min_words must be an int >= 2"),
                            ({"n_train": 0}, r"n_train must be an int >= 1 \(or None\)"),
                            ({"n_test": 2.5}, r"n_test must be an int >= 1 \(or None\)"),
                            ({"fractions": (0.5, 0.5)}, "fractions must be three"),
                            ({"fractions": (0.9, 0.2, -0.1)}, "fractions must be three"),
                            ({"n_train": 10 ** 6}, "usable lines, fewer than the 1000000"),
                            ({"min_words": 50}, "has no line of at least 50 words")):
        with pytest.raises(ValueError, match=message):
            make_acceptability(text, **kwargs)
    with pytest.raises(ValueError, match="needs at least 10"):
        make_acceptability("A:\nlord thou hath night\n")


def test_files_round_trip_through_the_cloze_format(tmp_path):
    task = make_acceptability(play(), seed=0, n_train=50, n_val=8, n_test=12)
    save_task(task, tmp_path / "t")
    loaded = load_task(tmp_path / "t")
    assert loaded.train == task.train and loaded.val == task.val and loaded.test == task.test
    assert loaded.pretrain_text == task.pretrain_text
    assert loaded.info["kind"] == "swap" and loaded.info["test_examples"] == 12
    # every setting that made the task is recorded with it
    assert {k: loaded.info[k] for k in ("seed", "n_train", "n_val", "n_test", "last_word",
                                        "min_words")} == dict(
        seed=0, n_train=50, n_val=8, n_test=12, last_word=False, min_words=4)


def test_the_command_writes_the_task_and_refuses_bad_arguments(tmp_path, capsys):
    data = tmp_path / "play.txt"
    data.write_text(play(), encoding="utf-8")
    out = tmp_path / "task"
    assert cli_main(["acceptability", "--data", str(data), "--out_dir", str(out),
                     "--n_train", "40", "--n_test", "20", "--seed", "2"]) == 0
    assert "40 train" in capsys.readouterr().out
    task = load_task(out)
    assert task.train == make_acceptability(play(), seed=2, n_train=40, n_test=20).train
    before = (out / "train.jsonl").read_text()
    assert cli_main(["acceptability", "--data", str(data), "--out_dir", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    for argv, message in ((["--n_train", "0"], "--n_train must be >= 1"),
                          (["--min_words", "1"], "--min_words must be >= 2"),
                          (["--seed", "-3"], "--seed must be >= 0")):
        assert cli_main(["acceptability", "--data", str(data), "--out_dir",
                         str(tmp_path / "bad"), *argv]) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    assert (out / "train.jsonl").read_text() == before


def test_tiny_shakespeare_task(shared_data, monkeypatch):
    """The task docs/transfer.md reports: its sizes, and no held-out line in pre-training."""
    path = shared_data / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    monkeypatch.setenv("TINYGPT_SHAKESPEARE", str(path))
    task = make_acceptability(load_text("shakespeare"), seed=0)
    assert (len(task.train), len(task.val), len(task.test)) == (19096, 852, 3441)
    pretrain_lines = set(task.pretrain_text.split("\n"))
    assert not any(real_and_wrong(e)[0] in pretrain_lines for e in task.val + task.test)


@pytest.mark.parametrize("kind", ["misspell", "replace"])
def test_last_word_changes_the_last_word_that_can_change(kind):
    task = make_acceptability(play(), kind=kind, seed=0, last_word=True)
    for e in task.train + task.test:
        real, wrong = real_and_wrong(e)
        a, b = real.split(" "), wrong.split(" ")
        changed = [i for i in range(len(a)) if a[i] != b[i]]
        assert changed == [len(a) - 2]        # the last word is the tag "s.i", never plain
    with pytest.raises(ValueError, match="last_word must be True or False, and True only"):
        make_acceptability(play(), kind="swap", last_word=True)
