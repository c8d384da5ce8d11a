"""`python -m bench`: the dispatcher's messages and exit codes, and a smoke run of the
ops benchmark at tiny shapes (no timing is asserted: only that it runs and writes its rows).
"""

import json
import sys
import types

import pytest

from bench import __main__ as dispatcher
from bench import ops


def test_no_arguments_prints_the_usage_and_fails(capsys):
    assert dispatcher.main([]) == 2
    err = capsys.readouterr().err
    assert "usage: python -m bench NAME" in err
    assert all(name in err for name in ("ops", "train", "bpe"))


def test_help_succeeds(capsys):
    assert dispatcher.main(["--help"]) == 0
    assert "benchmarks:" in capsys.readouterr().out


def test_unknown_benchmark_is_named(capsys):
    assert dispatcher.main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_missing_benchmark_module_gets_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bench.train", None)   # import raises
    assert dispatcher.main(["train", "--steps", "1"]) == 2
    assert "bench/train.py" in capsys.readouterr().err


def test_arguments_reach_the_benchmark(monkeypatch):
    seen = []
    fake = types.ModuleType("bench.bpe")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "bench.bpe", fake)
    assert dispatcher.main(["bpe", "--x", "1"]) == 3
    assert seen == [["--x", "1"]]


def test_ops_benchmark_runs_at_tiny_shapes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "rows.json"
    status = ops.main(["--sizes", "tiny", "--no-gpt2-vocab", "--no-torch", "--repeat", "3",
                       "--warmup", "1", "--budget", "0.01", "--json", str(path)])
    assert status == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    names = {row["op"] for row in data["rows"]}
    assert {"add (overhead)", "matmul", "linear", "softmax", "layer_norm", "gelu tanh",
            "cross_entropy", "attention causal", "embedding"} <= names
    for row in data["rows"]:
        assert row["tinygpt_s"] > 0 and row["torch_s"] is None and row["calls"] >= 3
        assert row["op"] in out


def test_ops_benchmark_rejects_an_unknown_size():
    with pytest.raises(SystemExit):
        ops.main(["--sizes", "huge", "--no-torch"])
