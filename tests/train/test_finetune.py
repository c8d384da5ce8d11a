"""Fine-tuning on a multiple-choice task: GPT-1's input rows, batches, the run and its
checkpoint, from a new GPT and from a `tinygpt train` checkpoint, and the CLI's errors."""

import json

import numpy as np
import pytest

from tinygpt.cli import main as cli_main
from tinygpt.data import CharTokenizer
from tinygpt.data.cloze import ClozeExample, ClozeTask, save_task
from tinygpt.train.finetune import (accuracy, collate, encode_example, encode_split,
                                    load_classifier)

SPECIAL = {"_start_": 100, "_delimiter_": 101, "_classify_": 102}


def test_rows_are_start_story_delim_ending_clf():
    tok = CharTokenizer("abcdefgh\n")
    rows = encode_example(tok, SPECIAL, "ab\n", ["cd", "e"], block_size=16)
    assert rows == [[100, 0, 1, 8, 101, 2, 3, 102], [100, 0, 1, 8, 101, 4, 102]]


def test_long_rows_are_cut_to_the_block_size():
    tok = CharTokenizer("abcdefgh")
    story, endings = "abcdefgh" * 3, ["abcdefgh" * 2, "ab"]
    rows = encode_example(tok, SPECIAL, story, endings, block_size=12)
    # Endings keep their first (12 - 3) // 2 = 4 tokens; the story keeps its last 12 - 3 - 4.
    assert rows[0] == [100] + tok.encode("defgh") + [101] + tok.encode("abcd") + [102]
    assert rows[1] == [100] + tok.encode("defgh") + [101] + tok.encode("ab") + [102]
    assert max(len(r) for r in rows) == 12


def test_collate_pads_on_the_right():
    ids, mask = collate([[[1, 2, 3], [4]], [[5, 6], [7, 8, 9, 10]]])
    assert ids.shape == mask.shape == (2, 2, 4)
    np.testing.assert_array_equal(ids[0], [[1, 2, 3, 0], [4, 0, 0, 0]])
    np.testing.assert_array_equal(mask[1], [[1, 1, 0, 0], [1, 1, 1, 1]])


def yes_no_task(folder, n=(96, 24, 24), seed=0):
    """A task a model can learn in a few steps: the right ending is always 'yes'."""
    rng = np.random.default_rng(seed)

    def examples(count):
        out = []
        for _ in range(count):
            story = "".join(rng.choice(list("abcdefgh"), 6)) + "\n"
            label = int(rng.integers(2))
            endings = ["no", "no"]
            endings[label] = "yes"
            out.append(ClozeExample(story, endings, label))
        return out
    save_task(ClozeTask(*(examples(k) for k in n), pretrain_text="abcdefgh\nyesno\n"), folder)
    return str(folder)


SMALL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "24",
         "--batch_size", "8", "--log_interval", "100"]


def test_finetune_learns_a_task_and_saves_a_classifier(tmp_path, capsys):
    task = yes_no_task(tmp_path / "task")
    out = tmp_path / "run"
    status = cli_main(["finetune", "--task", task, "--out_dir", str(out), *SMALL,
                       "--epochs", "2", "--learning_rate", "3e-3", "--lm_coef", "0.5"])
    assert status == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["chance"] == 0.5 and results["test_examples"] == 24
    assert results["test_accuracy"] == 1.0 and len(results["history"]) == 2
    model, tokenizer, special = load_classifier(out)
    assert model.config.vocab_size == tokenizer.vocab_size + 3
    assert sorted(special.values()) == [tokenizer.vocab_size + i for i in range(3)]
    from tinygpt.data.cloze import load_task
    test = encode_split(load_task(task).test, tokenizer, special, model.config.block_size)
    assert accuracy(model, test, batch_size=5) == results["test_accuracy"]

    # The classifier is not a language model checkpoint: `sample` says so, on one line.
    capsys.readouterr()
    assert cli_main(["sample", "--out_dir", str(out), "--num_tokens", "3"]) == 1
    err = capsys.readouterr().err
    assert "GPTForMultipleChoice" in err and err.count("\n") == 1
    # An existing run is kept unless --overwrite.
    before = (out / "ckpt.npz").read_bytes()
    assert cli_main(["finetune", "--task", task, "--out_dir", str(out), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert (out / "ckpt.npz").read_bytes() == before


def test_finetune_from_a_trained_checkpoint(tmp_path, capsys):
    task = yes_no_task(tmp_path / "task", n=(16, 8, 8))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefgh\nyes no\n" * 40)
    assert cli_main(["train", "--data", str(corpus), "--out_dir", str(tmp_path / "pre"),
                     "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "24",
                     "--batch_size", "4", "--max_iters", "5", "--eval_interval", "5",
                     "--eval_iters", "1", "--processes", "1"]) == 0
    status = cli_main(["finetune", "--task", task, "--init_from", str(tmp_path / "pre"),
                       "--out_dir", str(tmp_path / "run"), "--epochs", "1",
                       "--batch_size", "8", "--lm_coef", "0"])
    assert status == 0, capsys.readouterr().err
    model, tokenizer, _ = load_classifier(tmp_path / "run")
    assert model.config.n_embd == 16 and model.config.block_size == 24
    assert tokenizer.vocab_size == len(set("abcdefgh\nyes no\n"))


@pytest.mark.parametrize("args, message", [
    (["--lm_coef", "-1"], "lm_coef must be a finite number >= 0"),
    (["--epochs", "0"], "epochs must be a positive int"),
    (["--task", "nowhere"], "no task folder nowhere"),
    (["--init_from", "nowhere"], "no pretrained model folder"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    task = yes_no_task(tmp_path / "task", n=(4, 2, 2))
    status = cli_main(["finetune", "--task", task, "--out_dir", str(tmp_path / "run"), *SMALL,
                       *args])
    err = capsys.readouterr().err
    assert status == 1 and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
