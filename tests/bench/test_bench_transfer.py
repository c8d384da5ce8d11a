"""The transfer experiment (bench/transfer.py) at tiny sizes: every row of its table, its
files, the zero-shot scorer and the baseline (its figures are the experiment's business,
not the tests')."""

import json

import numpy as np
import pytest

from bench import transfer
from tinygpt.data.cloze import ClozeExample


def play(n_speeches=60, seed=0):
    rng = np.random.default_rng(seed)
    words = ["lord", "thou", "hath", "night", "king", "sweet", "death", "love", "speak"]
    blocks = []
    for s in range(n_speeches):
        lines = [" ".join(rng.choice(words, 5)) for _ in range(rng.integers(2, 8))]
        blocks.append(f"{rng.choice(['ROMEO', 'JULIET'])}:\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


TINY = ["--n_train", "24", "--n_val", "6", "--n_test", "10", "--pretrain_iters", "3",
        "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "48",
        "--pretrain_batch_size", "4", "--epochs", "1", "--batch_size", "8"]


def test_the_whole_experiment_at_tiny_sizes_prints_every_row(tmp_path, capsys):
    data = tmp_path / "play.txt"
    data.write_text(play(), encoding="utf-8")
    out = tmp_path / "out"
    assert transfer.main(["--data", str(data), "--out_dir", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    for row in ("majority-class baseline", "pre-trained LM, zero-shot likelihood",
                "fine-tuned, random init, lambda 0 ", "fine-tuned, random init, lambda 0.5",
                "fine-tuned, pretrained init, lambda 0 ",
                "fine-tuned, pretrained init, lambda 0.5",
                "pre-trained - random init, lambda 0 ", "pre-trained - random init, lambda 0.5"):
        assert row in printed, row
    results = json.loads((out / "results.json").read_text())
    assert [(r["init"], r["lm_coef"]) for r in results["rows"]] == [
        ("random", 0.0), ("random", 0.5), ("pretrained", 0.0), ("pretrained", 0.5)]
    for row in results["rows"]:
        assert len(row["accuracies"]) == 3 and all(0 <= a <= 1 for a in row["accuracies"])
        assert row["mean"] == pytest.approx(np.mean(row["accuracies"]))
        assert row["se"] == pytest.approx(np.std(row["accuracies"], ddof=1) / np.sqrt(3))
        for seed in (0, 1, 2):
            run = out / "runs" / f"{row['init']}-lm{row['lm_coef']:g}-seed{seed}"
            assert (run / "ckpt.npz").is_file() and (run / "results.json").is_file()
    assert results["majority"] == 0.5 and results["test_examples"] == 10
    assert (out / "task" / "pretrain.txt").is_file() and (out / "pretrained" / "ckpt.npz").is_file()
    # A second run over the same folder is refused; --overwrite replaces it, and --task and
    # --pretrained reuse what the first run wrote.
    with pytest.raises(FileExistsError):
        transfer.main(["--data", str(data), "--out_dir", str(out), *TINY])
    again = tmp_path / "again"
    assert transfer.main(["--task", str(out / "task"), "--pretrained", str(out / "pretrained"),
                          "--out_dir", str(again), "--inits", "pretrained", "--lm_coefs", "0.5",
                          "--seeds", "4", *TINY]) == 0
    reused = json.loads((again / "results.json").read_text())
    assert reused["zero_shot"] == results["zero_shot"] and len(reused["rows"]) == 1
    assert not (again / "task").exists() and not (again / "pretrained").exists()


class _Tokenizer:
    def encode(self, text):
        return [ord(c) - ord("a") + 1 if c != "\n" else 0 for c in text]


class _Bigram:
    """A language model that knows one thing: 'a' is followed by 'b' (log-prob 0), every
    other next token has log-probability log(1/27)."""

    class config:
        block_size = 16

    def eval(self):
        return self

    def __call__(self, x):
        x = np.asarray(x)
        logits = np.zeros(x.shape + (27,))
        logits[x == 1, 2] = 50.0
        return type("T", (), {"data": logits})(), None


def test_zero_shot_picks_the_ending_of_highest_total_likelihood():
    examples = [ClozeExample("", ["ba", "ab"], 1), ClozeExample("c", ["ab", "ba"], 0),
                ClozeExample("", ["ab", "ba"], 1)]
    accuracy = transfer.zero_shot_accuracy(_Bigram(), _Tokenizer(), examples, batch_size=2)
    assert accuracy == pytest.approx(2 / 3)


def test_majority_baseline_and_standard_errors():
    train = [ClozeExample("", ["x", "y"], label) for label in (1, 1, 0)]
    test = [ClozeExample("", ["x", "y"], label) for label in (1, 0, 0, 0)]
    assert transfer.majority_accuracy(train, test) == 0.25
    assert transfer.mean_and_se([0.5, 0.7, 0.6]) == pytest.approx((0.6, 0.1 / np.sqrt(3)))
    assert transfer.mean_and_se([0.5]) == (0.5, 0.0)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "0"], "--seeds must be distinct"),
    (["--n_train", "0"], "--n_train must be >= 1"),
    (["--lm_coefs", "-1"], "--lm_coefs must be >= 0"),
    (["--learning_rate", "0"], "--learning_rate must be > 0"),
    (["--inits", "scratch"], "invalid choice"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        transfer.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
