"""`python -m bench generate`: its arguments, the summary of rounds (medians, spreads,
ratios per round, where greedy tokens part) and, with torch and transformers installed, a
tiny run end to end in which tinygpt's greedy tokens equal transformers'. No timing is
asserted."""

import json

import numpy as np
import pytest

from bench import generate as bench


def fake_round(tokens_per_s, greedy_tokens, finetune_ms):
    """One process's JSON as `_CHILD` prints it: 8 new tokens a run in each case."""
    return {"greedy B1": {"seconds": [8 / tokens_per_s, 8 / tokens_per_s * 1.5],
                          "tokens": greedy_tokens, "new_tokens": 8},
            "finetune": {"seconds": [finetune_ms / 1e3], "first_loss": 10.8}}


def test_summarize_gives_medians_spreads_and_per_round_ratios():
    same, other = [[1, 2, 3]], [[1, 2, 4]]
    runs = {"tinygpt": [fake_round(40, same, 900), fake_round(20, same, 1100),
                        fake_round(30, same, 1000)],
            "transformers": [fake_round(20, same, 1000), fake_round(20, same, 1000),
                             fake_round(10, same, 2000)],
            "before": [fake_round(10, other, 1000)] * 3}
    table = bench.summarize(runs, ["tinygpt", "transformers", "before"])
    greedy, finetune = table["greedy B1"], table["finetune"]
    # each process's rate is its median run's: 8 tokens / (median of 0.2 and 0.3 s) etc.
    rates = [8 / np.median([8 / r, 12 / r]) for r in (40, 20, 30)]
    assert greedy["tinygpt"]["rounds"] == pytest.approx(rates)
    assert greedy["tinygpt"]["median"] == pytest.approx(np.median(rates))
    assert greedy["tinygpt"]["spread"] == pytest.approx([min(rates), max(rates)])
    ratio = greedy["ratios"]["tinygpt/transformers"]
    assert ratio["rounds"] == pytest.approx([2.0, 1.0, 3.0])
    assert ratio["median"] == pytest.approx(2.0) and ratio["spread"] == pytest.approx([1, 3])
    assert set(greedy["ratios"]) == {"tinygpt/transformers", "before/transformers",
                                     "tinygpt/before"}
    assert finetune["tinygpt"]["rounds"] == pytest.approx([900, 1100, 1000])
    assert finetune["ratios"]["tinygpt/transformers"]["rounds"] == pytest.approx([0.9, 1.1, 0.5])
    assert greedy["first_difference"] == {"tinygpt/transformers": None,
                                          "before/transformers": 2}
    assert "first_difference" not in finetune


def test_without_transformers_tinygpt_is_compared_with_before():
    runs = {"tinygpt": [fake_round(30, [[5, 6]], 900)],
            "before": [fake_round(20, [[5, 7]], 1000)]}
    table = bench.summarize(runs, ["tinygpt", "before"])
    assert set(table["greedy B1"]["ratios"]) == {"tinygpt/before"}
    assert table["greedy B1"]["ratios"]["tinygpt/before"]["median"] == pytest.approx(1.5)
    assert table["greedy B1"]["first_difference"] == {"tinygpt/before": 1}


def test_first_difference_finds_the_first_column_that_differs():
    assert bench.first_difference([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]) is None
    assert bench.first_difference([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 0, 6]]) == 1
    assert bench.first_difference([[1, 2]], [[1, 2, 3]]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "train"], "--tasks"),
    (["--modes", "beam"], "--modes"),
    (["--batch", "1,x"], "--batch"),
    (["--batch", "0"], "--batch"),
    (["--tokens", "0"], "--tokens"),
    (["--rounds", "0"], "--rounds"),
    (["--ft-block", "0"], "--ft-block"),
    (["--threads", "0"], "--threads"),
    (["--no-transformers"], "--no-transformers needs --before"),
    (["--before", "/nonexistent/checkout"], "holds no tinygpt package"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_gives_identical_greedy_tokens(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out_json = tmp_path / "out.json"
    assert bench.main(["--preset", "gpt-nano", "--rounds", "1", "--tokens", "3",
                       "--repeats", "1", "--batch", "2", "--ft-batch", "1", "--ft-block", "8",
                       "--ft-steps", "1", "--threads", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("host: ")
    data = json.loads(out_json.read_text())
    assert set(data["results"]) == {"greedy B2", "sampled B2", "finetune"}
    assert data["results"]["greedy B2"]["first_difference"] == {"tinygpt/transformers": None}
    for row in data["results"].values():
        assert row["tinygpt"]["median"] > 0 and row["transformers"]["median"] > 0
        assert row["ratios"]["tinygpt/transformers"]["median"] > 0
    assert "greedy B2: tinygpt's tokens identical to transformers'" in out
    assert data["host"]["tinygpt_threads"] == 1 and data["host"]["torch_threads"] == 1


SETTINGS = {"threads": 1, "task": "generate", "folder": "unused"}


def fake_checkout(folder, reported=None):
    """A checkout whose tinygpt package, imported by a measuring process, prints the JSON
    line `_CHILD` would (the package's file only) and ends the process."""
    package = folder / "tinygpt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import json, sys\n"
        f"print(json.dumps({{'package': {reported!r} or __file__}}))\n"
        "sys.exit(0)\n")
    return folder


def test_before_runs_the_tinygpt_of_its_checkout_not_of_the_working_directory(
        tmp_path, monkeypatch):
    # `python -c` would put the working directory (this repository, with its own tinygpt)
    # ahead of PYTHONPATH; the process must import the checkout's package.
    monkeypatch.chdir(bench.Path(bench.__file__).resolve().parents[1])
    root = fake_checkout(tmp_path / "old")
    assert bench.run_child("before", SETTINGS, root) == {}


def test_a_process_that_imports_another_tinygpt_is_refused(tmp_path):
    root = fake_checkout(tmp_path / "old", reported=str(tmp_path / "elsewhere/tinygpt/x.py"))
    with pytest.raises(RuntimeError, match="imported tinygpt from .*elsewhere.*expected"):
        bench.run_child("before", SETTINGS, root)
