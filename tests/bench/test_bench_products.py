"""`python -m bench products`: its arguments, and a tiny run that prints one row per case
with the three ways (no timing is asserted)."""

import pytest

from bench import products as bench
from tinygpt.autograd.fast import blas


@pytest.mark.parametrize("argv, message", [
    (["--rows", "1,x"], "--rows: expected comma-separated integers"),
    (["--rows", "0"], "--rows: expected counts >= 1"),
    (["--matrices", "0"], "--matrices must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not blas.can_limit_blas_threads(),
                    reason="NumPy's BLAS is not an OpenBLAS whose thread count tinygpt can set")
def test_a_tiny_run_prints_each_case_three_ways(monkeypatch, capsys):
    monkeypatch.setattr(bench, "SHAPES", {"qkv": (8, 24), "lm head": (8, 10001)})
    before = blas.get_blas_num_threads()
    assert bench.main(["--rows", "1,3", "--matrices", "2", "--repeats", "2",
                       "--threads", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["3"])]
    assert [(r[0], r[1]) for r in rows] == [("1", "qkv"), ("1", "lm"), ("3", "qkv"),
                                            ("3", "lm")]
    assert all(line.count("[") == 3 for line in lines if line.split()[:1] in (["1"], ["3"]))
    assert blas.get_blas_num_threads() == before            # every count restored
