"""`python -m bench quality` on a short text for a few iterations: it trains each
seed, scores every final model on the same fixed windows, summarises per framework and
writes JSON; the PyTorch twin (when installed) follows nanoGPT's loop deterministically."""

import json
import math
import statistics

import numpy as np
import pytest

from bench import quality


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    text = " ".join(rng.choice(words, size=1500)) + "\n"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def run(tmp_path, text_file, *extra, seeds="3,5"):
    out = tmp_path / "quality.json"
    status = quality.main(["--data", str(text_file), "--seeds", seeds, "--max-iters", "2",
                           "--eval-batches", "2", "--json", str(out), *extra])
    assert status == 0
    return json.loads(out.read_text())


def test_trains_each_seed_and_summarises(tmp_path, text_file, capsys):
    data = run(tmp_path, text_file, "--no-torch")
    assert set(data["runs"]) == {"tinygpt"} and data["eval_batches"] == 2
    runs = data["runs"]["tinygpt"]
    assert [r["seed"] for r in runs] == [3, 5]
    for r in runs:
        assert math.isfinite(r["val20"]) and math.isfinite(r["fixed"]) and r["seconds"] > 0
    assert runs[0]["fixed"] != runs[1]["fixed"]             # two seeds, two models
    summary = data["summary"]["tinygpt"]["fixed"]
    assert summary["mean"] == pytest.approx(statistics.fmean(r["fixed"] for r in runs))
    assert summary["min"] <= summary["mean"] <= summary["max"]
    assert summary["at_or_below_target"] == sum(r["fixed"] <= 1.89 for r in runs)
    out = capsys.readouterr().out
    assert "tinygpt val20" in out and "0 of 2 runs reach" in out


def test_a_seed_repeats_its_numbers(tmp_path, text_file):
    first = run(tmp_path, text_file, "--no-torch", seeds="5")["runs"]["tinygpt"]
    again = run(tmp_path, text_file, "--no-torch", seeds="5")["runs"]["tinygpt"]
    assert [r["seed"] for r in first] == [5]
    assert (first[0]["val20"], first[0]["fixed"]) == (again[0]["val20"], again[0]["fixed"])


def test_short_runs_keep_the_schedule_shape():
    cfg = quality.recipe_config("shakespeare", 1, "out", max_iters=200)
    assert (cfg.max_iters, cfg.lr_decay_iters, cfg.warmup_iters) == (200, 200, 10)
    full = quality.recipe_config("shakespeare", 1, "out")
    assert (full.max_iters, full.lr_decay_iters, full.warmup_iters) == (2000, 2000, 100)
    assert (full.n_layer, full.n_embd, full.block_size, full.batch_size) == (4, 128, 64, 12)


def test_fixed_windows_and_their_loss():
    val = np.arange(100, dtype=np.int64)
    starts = quality.fixed_windows(val, 8, 3, 5)
    assert starts.shape == (5, 3) and starts.min() >= 0 and starts.max() <= 100 - 8 - 1
    np.testing.assert_array_equal(starts, quality.fixed_windows(val, 8, 3, 5))
    # loss_of sees (x, y) windows with y = x shifted by one; the result is their mean.
    seen = []

    def loss_of(x, y):
        np.testing.assert_array_equal(y, x + 1)
        seen.append(x[:, 0].copy())
        return float(x.mean())

    expected = np.mean([np.mean(row[:, None] + np.arange(8)) for row in starts])
    assert quality.fixed_loss(loss_of, val, starts, 8) == pytest.approx(expected)
    np.testing.assert_array_equal(np.array(seen), starts)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "a,b"], "--seeds"),
    (["--seeds", ","], "--seeds"),
    (["--eval-batches", "0"], "--eval-batches"),
    (["--max-iters", "0"], "--max-iters"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        quality.main(argv)
    assert message in capsys.readouterr().err


def test_torch_twin_is_deterministic_per_seed(tmp_path, text_file):
    pytest.importorskip("torch")
    first = run(tmp_path, text_file)["runs"]["torch"]
    again = run(tmp_path, text_file, seeds="5")["runs"]["torch"]
    assert [r["seed"] for r in first] == [3, 5]
    assert (first[1]["val20"], first[1]["fixed"]) == (again[0]["val20"], again[0]["fixed"])
    assert first[0]["fixed"] != first[1]["fixed"]
