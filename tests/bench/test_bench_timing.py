"""The benchmarks' shared plumbing: the timing loop, `python -m bench.NAME` through the
dispatcher, and exit statuses (no timing is asserted)."""

import os
import subprocess
import sys
import types

import pytest

from bench import ROOT, with_root_on_path
from bench import __main__ as dispatcher
from bench import bpe
from bench.timing import median_seconds


def test_median_seconds_times_after_the_warm_up_and_runs_before_outside_the_timing():
    calls, befores = [], []
    seconds = median_seconds(lambda: calls.append(1), 3, warmup=2,
                             before=lambda: befores.append(1))
    assert len(calls) == 5 and len(befores) == 5 and seconds >= 0


def test_a_module_run_as_main_goes_through_the_dispatcher():
    done = subprocess.run([sys.executable, "-m", "bench.products", "--help"], cwd=ROOT,
                          env=with_root_on_path({}), capture_output=True, text=True)
    assert done.returncode == 0 and "usage: python -m bench products" in done.stdout


def test_a_main_that_returns_its_results_exits_0(monkeypatch):
    fake = types.ModuleType("bench.bpe")
    fake.main = lambda argv: [{"row": 1}]
    monkeypatch.setitem(sys.modules, "bench.bpe", fake)
    assert dispatcher.main(["bpe"]) == 0


def test_with_root_on_path_puts_each_root_first_once():
    env = with_root_on_path({"PYTHONPATH": f"/a{os.pathsep}{ROOT}"}, "/b", ROOT)
    assert env["PYTHONPATH"].split(os.pathsep) == ["/b", str(ROOT), "/a"]


@pytest.mark.parametrize("argv, message", [(["--runs", "0"], "--runs must be >= 1"),
                                           (["--mixed-mb", "0"], "--mixed-mb must be > 0")])
def test_bpe_refuses_counts_below_one(argv, message, capsys):
    with pytest.raises(SystemExit):
        bpe.main(argv)
    assert message in capsys.readouterr().err
