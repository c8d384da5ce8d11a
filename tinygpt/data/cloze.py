"""A story-cloze task made from tiny Shakespeare, and the multiple-choice file format
(floor 4, data).

ROCStories' cloze test gives four sentences of a story and asks which of two endings comes
next. `make_cloze` builds the same kind of task from a play in tiny Shakespeare's layout
(speeches separated by blank lines, each a `NAME:` line and then the lines spoken):

    story    n_context consecutive lines of one speech (each ending in a newline)
    endings  the line that follows them, and n_choices - 1 lines drawn at random from the
             true endings of other examples of the same split (from other speeches), in a
             random order; `label` is the true line's index

Splits are made of whole speeches: the speeches are shuffled with `seed` and cut into
train / validation / test (70 / 10 / 20 % by default). Each speech gives its
non-overlapping windows of n_context + 1 lines, one example each. Wrong endings are other
examples' right ones, so every candidate is a line that follows n_context others: what
tells them apart is how the line fits the story, not what lines ending a window look like
(a random line of a speech would more often be a short first line, a cue that needs no
story). The pre-training text is the training speeches in their original order, exactly
as the file has them (speaker lines included). Validation and test examples are kept only
when none of their lines (story or ending) is also a line of the pre-training text, and
when every character of theirs occurs in it (a character model pre-trained on it could
not read others): a model pre-trained on that text has seen no line of them. Everything is
drawn from one seeded generator, so a text and a seed give the same task on every machine.

Files (`save_task` / `load_task`): `train.jsonl`, `val.jsonl`, `test.jsonl`, one example per
line, `{"story": "...", "endings": ["...", "..."], "label": 0}` (any multiple-choice task in
this format can be fine-tuned on), plus `pretrain.txt` and `task.json` (the settings and
counts).

    >>> task = make_cloze(load_text("shakespeare"), n_context=3, n_choices=2, seed=0)
    >>> len(task.train), len(task.test), task.test[0].label
    (2800, 658, 1)

Imports: numpy, the standard library, files, validate.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..files import atomic_write_text, read_json
from .corpus import read_text_file

SPLITS = ("train", "val", "test")
PRETRAIN_FILE = "pretrain.txt"
INFO_FILE = "task.json"


@dataclass
class ClozeExample:
    """A story, its candidate endings, and the index of the right one."""

    story: str
    endings: list
    label: int

    def to_dict(self):
        return {"story": self.story, "endings": list(self.endings), "label": self.label}


@dataclass
class ClozeTask:
    """The three splits (lists of ClozeExample), the pre-training text and a summary."""

    train: list
    val: list
    test: list
    pretrain_text: str
    info: dict = field(default_factory=dict)

    def split(self, name):
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


def speeches(text):
    """The speeches of a play text: [(speaker line, [lines spoken])], in order. Blocks
    are separated by blank lines; a block whose first line does not end in ':' is not a
    speech and is skipped."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) >= 2 and lines[0].endswith(":"):
            out.append((lines[0], lines[1:]))
    return out


def split_speeches(text, rng, fractions, task):
    """The speeches of a play text (`speeches`), shuffled with `rng` and cut into the
    splits by `fractions` (train, validation, test), whole speeches per split:
    (speeches, {split: speech indices}, the pre-training text (the training speeches in
    their original order), the set of its lines, the set of its characters). `task` names
    the task in the error for a text of fewer than 10 speeches."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1 (train, "
                         f"validation, test), got {fractions!r}")
    all_speeches = speeches(text)
    if len(all_speeches) < 10:
        raise ValueError(f"the text has {len(all_speeches)} speeches ('NAME:' then lines, "
                         f"separated by blank lines); {task} needs at least 10")
    order = rng.permutation(len(all_speeches))
    cuts = np.round(np.cumsum(fractions)[:2] * len(all_speeches)).astype(int)
    members = dict(zip(SPLITS, np.split(order, cuts)))          # split -> speech indices
    in_train = np.zeros(len(all_speeches), dtype=bool)
    in_train[members["train"]] = True
    pretrain_text = "\n\n".join(speaker + "\n" + "\n".join(lines)
                                for (speaker, lines), keep in zip(all_speeches, in_train) if keep)
    pretrain_text += "\n"
    seen_lines = {line for (_, lines), keep in zip(all_speeches, in_train) if keep
                  for line in lines}
    return all_speeches, members, pretrain_text, seen_lines, set(pretrain_text)


def make_cloze(text, n_context=3, n_choices=2, seed=0, fractions=(0.7, 0.1, 0.2)):
    """The cloze task of a play text (see the module docstring); returns a ClozeTask."""
    validate.integer("n_context", n_context, minimum=1)
    validate.integer("n_choices", n_choices, minimum=2)
    validate.integer("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    all_speeches, members, pretrain_text, seen_lines, seen_chars = split_speeches(
        text, rng, fractions, "a cloze task")

    def usable(line, split):
        # A held-out line must be new to the pre-trained model and readable by its tokenizer.
        return split == "train" or (line not in seen_lines and set(line) <= seen_chars)

    task = {}
    for split in SPLITS:
        # Every window of n_context + 1 lines, in text order: (speech, story lines, next line).
        windows = []
        for s in sorted(members[split]):
            lines = all_speeches[s][1]
            for start in range(0, len(lines) - n_context, n_context + 1):
                window = lines[start:start + n_context + 1]
                if all(usable(line, split) for line in window):
                    windows.append((s, window[:-1], window[-1]))
        examples = []
        # n_choices - 1 distractors from other windows: fewer windows than that, no example.
        for s, story, true_line in windows if len(windows) >= n_choices else ():
            endings = _distractors(rng, windows, s, true_line, n_choices - 1)
            if endings is None:
                continue
            label = int(rng.integers(n_choices))
            endings.insert(label, true_line)
            examples.append(ClozeExample("".join(line + "\n" for line in story), endings, label))
        if not examples:
            raise ValueError(
                f"with n_context={n_context} and n_choices={n_choices} the {split} split has no "
                f"examples: an example needs a speech of n_context + 1 = {n_context + 1} lines "
                f"and n_choices - 1 next lines of other speeches of its split (it has "
                f"{len(windows)} windows); lower --n_context or --choices")
        task[split] = examples
    info = {"n_context": n_context, "n_choices": n_choices, "seed": seed,
            "fractions": list(fractions), "speeches": len(all_speeches),
            **{f"{split}_speeches": len(members[split]) for split in SPLITS},
            **{f"{split}_examples": len(task[split]) for split in SPLITS},
            "pretrain_chars": len(pretrain_text)}
    return ClozeTask(task["train"], task["val"], task["test"], pretrain_text, info)


def _distractors(rng, windows, speech, true_line, count, tries=1000):
    """`count` distinct next lines of other windows (speech, story, next line), from
    speeches other than `speech` and unlike the true line; None when there are too few."""
    picked = []
    for _ in range(tries):
        if len(picked) == count:
            return picked
        s, _, line = windows[int(rng.integers(len(windows)))]
        if s != speech and line != true_line and line not in picked:
            picked.append(line)
    return picked if len(picked) == count else None


# --- files --------------------------------------------------------------------------------
def save_task(task, folder, overwrite=False):
    """Write `task` into `folder` (created if needed): train.jsonl, val.jsonl, test.jsonl,
    pretrain.txt and task.json. An existing file of these names raises FileExistsError
    before anything is written, unless overwrite=True."""
    folder = Path(folder)
    files = {f"{split}.jsonl": "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n"
                                      for e in task.split(split)) for split in SPLITS}
    files[PRETRAIN_FILE] = task.pretrain_text
    files[INFO_FILE] = json.dumps(task.info, indent=2) + "\n"
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if not overwrite:
        existing = [name for name in files if (folder / name).exists()]
        if existing:
            raise FileExistsError(f"{folder / existing[0]} already exists; choose another "
                                  f"folder or pass --overwrite to replace the task there")
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(folder / name, text)


def load_split(path):
    """The examples of one `.jsonl` file; a malformed line raises ValueError naming the
    file, the line and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no task file {path}; a task folder holds train.jsonl, "
                                f"val.jsonl and test.jsonl (write one with `python -m tinygpt "
                                f"cloze`)")
    examples = []
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            endings = d["endings"]
            if not isinstance(endings, list):
                raise ValueError(f"{path}, line {number}: 'endings' must be a list of "
                                 f"strings, got {type(endings).__name__} {endings!r:.40}")
            example = ClozeExample(d["story"], list(endings), d["label"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}, line {number}: expected a JSON object with 'story', "
                             f"'endings' and 'label' ({type(e).__name__}: {e})") from None
        _check_example(example, path, number)
        examples.append(example)
    if not examples:
        raise ValueError(f"{path} holds no examples")
    counts = {len(e.endings) for e in examples}
    if len(counts) != 1:
        raise ValueError(f"{path}: every example must have the same number of endings, found "
                         f"{sorted(counts)}")
    return examples


def _check_example(e, path, number):
    where = f"{path}, line {number}"
    if not isinstance(e.story, str) or not all(isinstance(x, str) for x in e.endings):
        raise ValueError(f"{where}: 'story' and each of 'endings' must be strings")
    if len(e.endings) < 2:
        raise ValueError(f"{where}: an example needs at least 2 endings, got {len(e.endings)}")
    validate.integer(f"{where}: 'label' (an index into the {len(e.endings)} endings)", e.label,
                     minimum=0, maximum=len(e.endings) - 1)


def load_task(folder):
    """The ClozeTask in `folder` (as `save_task` writes it); pretrain.txt and task.json
    are optional."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no task folder {folder}; write one with `python -m tinygpt "
                                f"cloze --out_dir {folder}`")
    splits = {split: load_split(folder / f"{split}.jsonl") for split in SPLITS}
    counts = {split: len(examples[0].endings) for split, examples in splits.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{folder}: the splits have different numbers of endings: {counts}")
    pretrain = folder / PRETRAIN_FILE
    info = folder / INFO_FILE
    return ClozeTask(**splits,
                     pretrain_text=read_text_file(pretrain) if pretrain.is_file() else "",
                     info=read_json(info) if info.is_file() else {})

