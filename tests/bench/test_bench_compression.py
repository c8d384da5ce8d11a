"""The int8 and pruning benchmarks (bench/int8.py, bench/prune.py) on a tiny run."""

import sys

import pytest

from tinygpt.train import TrainConfig, Trainer

bench_int8 = pytest.importorskip("bench.int8")
bench_prune = pytest.importorskip("bench.prune")


@pytest.fixture
def tiny_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("It is a truth universally acknowledged, that a single man. " * 40,
                      encoding="utf-8")
    out = tmp_path / "run"
    Trainer(TrainConfig(data=str(corpus), out_dir=str(out), n_layer=1, n_head=2, n_embd=16,
                        block_size=16, batch_size=4, max_iters=6, eval_interval=6,
                        eval_iters=1, log_interval=6, processes=1), log=lambda line: None).run()
    return str(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_int8_benchmark_on_a_tiny_run(tiny_run, capsys):
    assert bench_int8.main(["--out_dir", tiny_run, "--eval_iters", "2", "--num_tokens", "5",
                            "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "reusing the run" in out
    assert "| weights in memory (MB) |" in out and "| validation loss |" in out
    assert "int8 x int8, int32 sums" in out


def test_int8_weights_are_smaller(tiny_run):
    config = bench_int8.run_config(tiny_run)
    results = {mode: bench_int8.run_child({"mode": mode, "out_dir": tiny_run, "config": config,
                                           "eval_iters": 1, "num_tokens": 3, "repeats": 1})
               for mode in bench_int8.MODES}
    assert results["int8"]["weight_bytes"] < results["float32"]["weight_bytes"] / 2
    assert abs(results["int8"]["val_loss"] - results["float32"]["val_loss"]) < 0.05


def test_prune_benchmark_keeps_the_sparsity_through_the_fine_tune(tiny_run):
    rows = bench_prune.measure(tiny_run, sparsities=(0.0, 0.5), iters=3, eval_iters=2,
                               log=lambda line: None)
    assert [row[0] for row in rows] == [0.0, 0.5]
    assert rows[0][3] == 0.0 and rows[1][3] == 0.5
    table = bench_prune.table(rows, 3, 1e-4)
    assert "| 50% |" in table and "+3 iters at lr 0.0001" in table


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench_prune.main(["--sparsities", "0.5,1.0"])
    assert "--sparsities must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_int8.main(["--repeats", "0"])
    assert "--repeats must be >= 1" in capsys.readouterr().err
