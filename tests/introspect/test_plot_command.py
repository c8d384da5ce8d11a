"""`python -m tinygpt plot`: reading the log, grouping the statistics, the messages for a
missing log or a missing matplotlib, and the PNG files (when matplotlib is installed)."""

import json
import re
import sys

import pytest

from tinygpt.cli import main
from tinygpt.cli.plot import activation_series, parameter_series
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train.stats import read_log


def stats_record(it, scale=1.0):
    params = {}
    for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight",
                 "transformer.h.1.attn.c_attn.weight", "transformer.h.0.ln_1.bias",
                 "transformer.h.1.ln_1.bias", "transformer.ln_f.weight"):
        ratio = None if (it == 0 and name.endswith("bias")) else 1e-3 * scale
        params[name] = {"grad_norm": 0.5 * scale, "update_ratio": ratio}
    activations = {f"transformer.h.{i}": {"mean": 0.01 * i, "std": 0.1 + i} for i in range(2)}
    return {"event": "stats", "iter": it, "params": params, "activations": activations}


def write_log(path, records, garbage=False):
    lines = [json.dumps(r) for r in records]
    if garbage:
        lines.append('{"event": "train", "iter": 9, "lo')       # cut short by a kill
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


RECORDS = [
    {"event": "eval", "iter": 0, "train_loss": 3.3, "val_loss": 3.4},
    {"event": "train", "iter": 0, "loss": 3.3, "lr": 1e-4, "ms_per_iter": 5.0,
     "tokens_per_s": 1e4},
    stats_record(0),
    {"event": "train", "iter": 5, "loss": 2.9, "lr": 1e-3, "ms_per_iter": 5.0,
     "tokens_per_s": 1e4},
    stats_record(5, scale=2.0),
    {"event": "eval", "iter": 6, "train_loss": 2.8, "val_loss": 2.9},
]


def test_read_log_groups_records_and_skips_a_cut_line(tmp_path):
    write_log(tmp_path / "log.jsonl", RECORDS, garbage=True)
    log = read_log(tmp_path / "log.jsonl")
    assert [r["iter"] for r in log["train"]] == [0, 5]
    assert [r["iter"] for r in log["eval"]] == [0, 6]
    assert [r["iter"] for r in log["stats"]] == [0, 5]


def test_parameter_series_groups_blocks_into_panels():
    series = parameter_series([stats_record(0), stats_record(5, scale=2.0)])
    assert list(series) == ["transformer.h.*.attn.c_attn.weight", "transformer.h.*.ln_1.bias",
                            "outside the blocks"]
    assert list(series["transformer.h.*.attn.c_attn.weight"]) == ["h.0", "h.1"]
    assert list(series["outside the blocks"]) == ["transformer.wte.weight",
                                                  "transformer.ln_f.weight"]
    bias = series["transformer.h.*.ln_1.bias"]["h.1"]
    assert bias["iter"] == [0, 5]
    assert bias["update_ratio"] == [None, 2e-3] and bias["grad_norm"] == [0.5, 1.0]
    only = parameter_series([stats_record(0)], re.compile("attn"))
    assert list(only) == ["transformer.h.*.attn.c_attn.weight"]


def test_activation_series():
    blocks = activation_series([stats_record(0), stats_record(5)])
    assert list(blocks) == ["transformer.h.0", "transformer.h.1"]
    assert blocks["transformer.h.1"] == {"iter": [0, 5], "mean": [0.01, 0.01], "std": [1.1, 1.1]}


def test_missing_log_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", "--out_dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "log.jsonl" in err and "python -m tinygpt train" in err


def test_empty_log_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text("\n", encoding="utf-8")
    assert main(["plot", "--out_dir", str(tmp_path)]) == 1
    assert "holds no training records" in capsys.readouterr().err


def test_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "log.jsonl", RECORDS)
    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", "--out_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err
    assert "pip install matplotlib" in err and '.[plot]' in err
    assert not list(tmp_path.glob("*.png"))


def test_bad_params_pattern(tmp_path, capsys):
    write_log(tmp_path / "log.jsonl", RECORDS)
    assert main(["plot", "--out_dir", str(tmp_path), "--params", "("]) == 2
    assert "--params" in capsys.readouterr().err


def test_writes_pngs_of_a_real_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    run = tmp_path / "run"
    Trainer(TrainConfig(data=str(corpus), out_dir=str(run), n_layer=2, n_head=2, n_embd=16,
                        block_size=16, batch_size=4, max_iters=6, eval_interval=3,
                        eval_iters=1, log_interval=2, warmup_iters=1, lr_decay_iters=6,
                        save_checkpoints=False, stats=True), log=lambda line: None).run()
    plots = tmp_path / "plots"
    assert main(["plot", "--out_dir", str(run), "--output_dir", str(plots)]) == 0
    out = capsys.readouterr().out
    names = ("loss.png", "grad_norms.png", "update_ratios.png", "activations.png")
    for name in names:
        path = plots / name
        assert str(path) in out
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    assert not list(run.glob("*.png"))          # --output_dir, not out_dir


def test_log_without_stats_draws_the_loss_only(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "log.jsonl", [r for r in RECORDS if r["event"] != "stats"])
    assert main(["plot", "--out_dir", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.glob("*.png")] == ["loss.png"]
    assert "--stats true" in capsys.readouterr().out
