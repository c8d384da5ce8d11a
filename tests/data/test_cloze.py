"""The cloze task: speeches, seeded splits, examples, what the pre-training text leaves
out, and the task files."""

import json

import numpy as np
import pytest

from tinygpt.data import load_text
from tinygpt.data.cloze import (ClozeExample, load_split, load_task, make_cloze, save_task,
                                speeches)


def play(n_speeches=80, seed=0):
    """A text in tiny Shakespeare's layout: 'NAME:' then 1 to 9 numbered lines, blank-line
    separated. Every line is distinct, so where a line came from is never ambiguous."""
    rng = np.random.default_rng(seed)
    words = ["lord", "thou", "hath", "night", "king", "sweet", "death", "love", "speak"]
    blocks = []
    for s in range(n_speeches):
        lines = [f"{' '.join(rng.choice(words, 4))} {s}.{i}" for i in range(rng.integers(1, 10))]
        blocks.append(f"{rng.choice(['ROMEO', 'JULIET', 'First Citizen'])}:\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def test_speeches_are_the_blank_line_blocks_with_a_speaker():
    text = "A:\none\ntwo\n\n\nB:\nthree\n\nnot a speech\n\nC:\n"
    assert speeches(text) == [("A:", ["one", "two"]), ("B:", ["three"])]


def test_examples_are_consecutive_lines_and_distractors_from_the_same_split():
    text = play()
    task = make_cloze(text, n_context=2, n_choices=3, seed=1)
    origin = {}                                       # line -> (split of its speech, speech)
    lines_of = {}
    for s, (_, lines) in enumerate(speeches(text)):
        lines_of[s] = lines
        for line in lines:
            origin[line] = s
    split_of = {}
    for split in ("train", "val", "test"):
        examples = task.split(split)
        assert examples, split
        true_endings = {e.endings[e.label] for e in examples}
        assert all(ending in true_endings for e in examples for ending in e.endings)
        for e in examples:
            story = e.story.split("\n")
            assert len(story) == 3 and story[-1] == ""          # 2 lines, each ending in \n
            assert len(e.endings) == 3 and len(set(e.endings)) == 3
            true = e.endings[e.label]
            s = origin[true]
            i = lines_of[s].index(true)
            assert lines_of[s][i - 2:i] == story[:2]             # the lines just before it
            assert split_of.setdefault(s, split) == split
            for k, ending in enumerate(e.endings):
                if k != e.label:
                    assert origin[ending] != s
                    split_of.setdefault(origin[ending], split)
                    assert split_of[origin[ending]] == split      # drawn within the split
    labels = [e.label for e in task.train]
    assert set(labels) == {0, 1, 2}


def test_splits_are_seeded_and_fixed():
    text = play()
    a, b = make_cloze(text, seed=3), make_cloze(text, seed=3)
    assert a == b
    assert make_cloze(text, seed=4).test != a.test
    assert a.info["train_speeches"] + a.info["val_speeches"] + a.info["test_speeches"] == 80


def test_pretraining_text_holds_no_held_out_line():
    text = play(120)
    task = make_cloze(text, n_context=3, seed=0)
    pretrain_lines = set(task.pretrain_text.split("\n"))
    held_out = [line for split in ("val", "test") for e in task.split(split)
                for line in e.story.split("\n")[:-1] + e.endings]
    assert held_out and not pretrain_lines & set(held_out)
    # ... and it is the training speeches, exactly as in the text, in their order.
    train_speeches = [f"{speaker}\n" + "\n".join(lines) for speaker, lines in speeches(text)
                      if f"{speaker}\n" + "\n".join(lines) in task.pretrain_text]
    assert len(train_speeches) == task.info["train_speeches"]
    assert task.pretrain_text == "\n\n".join(train_speeches) + "\n"


def test_held_out_examples_need_the_pretraining_characters():
    text = play(120)
    task = make_cloze(text, seed=0)
    # A character only one test line has: the split is the same (it depends on the number
    # of speeches and the seed), and the example holding that line is dropped.
    line = task.test[0].endings[task.test[0].label]
    changed = make_cloze(text.replace(line, line + "@"), seed=0)
    assert "@" not in changed.pretrain_text
    assert len(changed.test) == len(task.test) - 1
    assert not any("@" in e.story + "".join(e.endings) for e in changed.val + changed.test)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="n_choices must be an int >= 2"):
        make_cloze(play(), n_choices=1)
    with pytest.raises(ValueError, match="n_context"):
        make_cloze(play(), n_context=0)
    with pytest.raises(ValueError, match="fractions"):
        make_cloze(play(), fractions=(0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="has 0 speeches"):
        make_cloze("no speeches here\n")


def test_files_round_trip_and_are_never_overwritten_silently(tmp_path):
    task = make_cloze(play(), seed=2)
    save_task(task, tmp_path)
    assert load_task(tmp_path) == task
    before = (tmp_path / "test.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_task(make_cloze(play(), seed=9), tmp_path)
    assert (tmp_path / "test.jsonl").read_bytes() == before
    save_task(make_cloze(play(), seed=9), tmp_path, overwrite=True)
    assert (tmp_path / "test.jsonl").read_bytes() != before


def test_malformed_files_are_named(tmp_path):
    path = tmp_path / "val.jsonl"
    good = {"story": "a\n", "endings": ["b", "c"], "label": 1}
    for line, message in (("{", "line 2: expected a JSON object"),
                          (json.dumps({"story": "a"}), "line 2: expected"),
                          (json.dumps({**good, "label": 2}),
                           r"line 2: 'label' \(an index into the 2 endings\) must be an int in "
                           r"\[0, 1\], got 2"),
                          (json.dumps({**good, "endings": ["b"]}), "at least 2 endings"),
                          (json.dumps({**good, "endings": ["b", "c", "d"]}), "same number")):
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=message):
            load_split(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_split(path) == [ClozeExample("a\n", ["b", "c"], 1)]
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        load_task(tmp_path)


def test_tiny_shakespeare_task(shared_data, monkeypatch):
    """The task the README reports: its documented sizes, from the shared copy."""
    path = shared_data / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    monkeypatch.setenv("TINYGPT_SHAKESPEARE", str(path))
    task = make_cloze(load_text("shakespeare"), n_context=3, n_choices=2, seed=0)
    sizes = (len(task.train), len(task.val), len(task.test))
    assert sizes == (2800, 358, 658)
    assert abs(np.mean([e.label for e in task.test]) - 0.5) < 0.05
