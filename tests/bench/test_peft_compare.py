"""`python -m bench.peft_compare`: the task it builds and its table, on a tiny run."""

import numpy as np

from bench.peft_compare import main, make_task, scramble


def test_scrambled_lines_keep_their_letters_and_word_ends():
    rng = np.random.default_rng(0)
    line = "Whether 'tis nobler in the mind to suffer"
    wrong = scramble(line, rng)
    assert wrong != line and sorted(wrong) == sorted(line)
    changed = [(a, b) for a, b in zip(line.split(), wrong.split()) if a != b]
    assert len(changed) == 3
    assert all(a[0] == b[0] and a[-1] == b[-1] and len(a) >= 4 for a, b in changed)
    assert scramble("to be or not", rng) is None


def test_task_lines_are_held_out_of_pretraining(tmp_path):
    text = "\n".join(f"Line number {i} speaks of seven wonders and thirteen kingdoms"
                     f"{' again' * (i % 3)}" for i in range(400))
    task, pretrain = make_task(text, (20, 5, 5), seed=1)
    lines = set(pretrain.split("\n"))
    for e in task.train + task.val + task.test:
        right = e.endings[e.label]
        assert right not in lines and e.endings[1 - e.label] != right


def test_the_benchmark_prints_its_table(tmp_path, capsys):
    text = "\n".join(f"Whether {i} tis nobler in the mind to suffer the slings"
                     for i in range(300))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    rows = main(["--data", str(corpus), "--examples", "16", "4", "8", "--pretrain_iters",
                 "4", "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size",
                 "32", "--epochs", "1", "--batch_size", "8", "--adapter_size", "4",
                 "--lora_rank", "1", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert [r["method"] for r in rows] == ["full", "lora", "bottleneck"]
    C = 16
    assert rows[1]["trainable"] == 16 * C * 1 + C + 1
    assert rows[2]["trainable"] == 4 * C * 4 + 2 * 4 + 2 * C + C + 1
    assert rows[0]["trainable"] > rows[2]["trainable"]
    assert all(r["test_examples"] == 8 and r["step_ms"] >= 0 and r["peak_mb"] > 0
               for r in rows)
    assert "| LoRA rank 1 |" in out and "| bottleneck adapters m=4 |" in out
