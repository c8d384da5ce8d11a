"""`python -m bench train` at a tiny config: it runs, prints its table and writes JSON
of the documented shape with positive numbers (no timing is asserted), re-runs itself with
the BLAS thread variables set, and counts FLOPs by the formula it prints."""

import json
import os

import numpy as np
import pytest

from bench import host, train, train_alone, train_profile, train_runners
from tinygpt.model import GPT

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=2, vocab_size=11,
            bias=True)
CONFIG_KEYS = {"tinygpt_ms", "tinygpt_ms_spread", "torch_ms", "ratio", "gflops",
               "ceiling_gflops", "tinygpt_peak_rss_mb", "torch_peak_rss_mb", "optimizer_share",
               "tokens_per_s", "tinygpt_alone_ms", "tinygpt_alone_steps"}


@pytest.fixture
def one_thread(monkeypatch):
    """The environment the benchmark's re-run would have, so main() measures in-process."""
    for name in train.THREAD_VARS:
        monkeypatch.setenv(name, "1")
    return ["--threads", "1"]


def tiny_args(tmp_path, *extra):
    return ["--custom", json.dumps(TINY), "--iters", "2", "--warmup", "1", "--ceiling-size",
            "64", "--json", str(tmp_path / "out.json"), *extra]


def test_writes_the_documented_json_with_positive_numbers(tmp_path, one_thread, capsys):
    status = train.main(tiny_args(tmp_path, "--no-torch", "--rss-steps", "1", "--profile",
                                  *one_thread))
    assert status == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["threads"] == 1 and data["ceiling_gflops"] > 0
    assert set(data["configs"]) == {"custom"} and "generate" not in data
    row = data["configs"]["custom"]
    assert CONFIG_KEYS <= set(row)
    for key in ("tinygpt_ms", "gflops", "ceiling_gflops", "tinygpt_peak_rss_mb",
                "optimizer_share", "tokens_per_s"):
        assert row[key] > 0, key
    low, high = row["tinygpt_ms_spread"]
    assert 0 < low <= row["tinygpt_ms"] <= high
    assert row["optimizer_share"] < 1
    assert row["torch_ms"] is None and row["ratio"] is None and row["torch_peak_rss_mb"] is None
    assert row["ratio_paired"] is None and row["torch_steps_ms"] is None
    assert len(row["tinygpt_steps_ms"]) == 2                                # --iters 2
    assert row["tinygpt_ms"] == pytest.approx(np.median(row["tinygpt_steps_ms"]))
    assert row["flops_per_step"] == train.flops_per_step(TINY)
    assert row["tinygpt_processes"] == 1                    # one thread: nothing to split
    assert row["tinygpt_alone_ms"] > 0 and row["tinygpt_alone_steps"] == 2    # --iters 2
    # The config's ceiling is the higher of its medians before and after its steps.
    before, after = row["ceiling_gflops_before_after"]
    assert before > 0 and after > 0 and row["ceiling_gflops"] == max(before, after)
    # The profile covers forward and backward, and the table names the config.
    directions = {direction for _, direction, _, _ in row["profile"]}
    assert directions == {"forward", "backward"}
    assert "linear" in out and "backward" in out
    assert "custom" in out.split("Results")[-1] and train.FLOP_FORMULA in out
    # The host, its BLAS and the thread counts head the output and the table, and the JSON.
    assert data["host"]["cpu"] and data["host"]["tinygpt_threads"] == 1
    table_head = out.split("Results")[-2].strip().splitlines()[-2:]
    assert table_head == host.header_lines(data["host"]) and out.startswith("host: ")


def test_generate_reports_both_rates(tmp_path, one_thread):
    status = train.main(tiny_args(tmp_path, "--no-torch", "--no-rss", "--generate",
                                  "--gen-preset", "gpt-nano", "--gen-tokens", "3", *one_thread))
    assert status == 0
    g = json.loads((tmp_path / "out.json").read_text())["generate"]
    assert g["preset"] == "gpt-nano" and g["new_tokens"] == 3 and g["prompt_tokens"] == 8
    assert g["kv_cache_tokens_per_s"] > 0 and g["no_cache_tokens_per_s"] > 0
    assert g["speedup"] > 0
    # Greedy decoding of one model: the cached and the recomputing loop agree.
    assert g["same_tokens"] is True


def test_runs_again_with_the_thread_variables_set(monkeypatch):
    for name in train.THREAD_VARS + (train.CHILD_MARK,):
        monkeypatch.delenv(name, raising=False)
    calls = []

    class Done:
        returncode = 7

    def fake_run(cmd, env=None, **kwargs):
        calls.append((cmd, env))
        return Done()

    monkeypatch.setattr(train.subprocess, "run", fake_run)
    argv = ["--configs", "small", "--threads", "3", "--no-torch"]
    assert train.main(argv) == 7                       # the re-run's exit status
    (cmd, env), = calls
    assert cmd[-len(argv):] == argv and cmd[1:4] == ["-m", "bench", "train"]
    assert all(env[name] == "3" for name in train.THREAD_VARS)


def test_flops_follow_the_stated_formula():
    # N from a real model: every parameter once, except the position embedding.
    model = GPT(train.gpt_config(TINY, 0.0))
    n = sum(p.numel() for name, p in model.named_parameters()
            if name != "transformer.wpe.weight")
    B, T, C, L = TINY["batch_size"], TINY["block_size"], TINY["n_embd"], TINY["n_layer"]
    assert train.flops_per_step(TINY) == B * T * (6 * n + 12 * L * T * C)


@pytest.mark.parametrize("argv, message", [
    (["--configs", "huge"], "unknown config"),
    (["--custom", "{\"n_layer\": 1}"], "--custom"),
    (["--iters", "0"], "--iters"),
    (["--dropout", "1.5"], "--dropout"),
    (["--gelu", "exact"], "--gelu"),
    (["--alone-rounds", "0"], "--alone-rounds"),
    (["--alone-seconds", "-1"], "--alone-seconds"),
    (["--alone-seconds", "nan"], "--alone-seconds"),
    (["--profile-steps", "0"], "--profile-steps"),
    (["--processes", "0"], "--processes"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.main(argv)
    assert message in capsys.readouterr().err


def test_profile_gives_both_frameworks_ops_per_step(tmp_path, one_thread, capfd):
    pytest.importorskip("torch")
    status = train.main(tiny_args(tmp_path, "--no-rss", "--profile", "--profile-steps", "3",
                                  *one_thread))
    assert status == 0
    row = json.loads((tmp_path / "out.json").read_text())["configs"]["custom"]
    assert row["profile_steps"] == 3
    ours = {(op, d): (calls, sec) for op, d, calls, sec in row["profile"]}
    # One block: c_attn, c_proj, c_fc, mlp c_proj, and the lm_head, per step (not per 3).
    assert ours[("linear", "forward")][0] == 5 and ours[("linear", "backward")][0] == 5
    assert all(sec > 0 for _, sec in ours.values())
    theirs = {op: (calls, sec) for op, calls, sec in row["torch_profile"]}
    assert theirs["aten::native_layer_norm"][0] == 3               # ln_1, ln_2, ln_f
    assert any(op.startswith("aten::") and sec > 0 for op, (_, sec) in theirs.items())
    out, err = capfd.readouterr()
    assert "per step over 3 more steps" in out and "torch.profiler" in out
    assert "profiler_start" not in err and "profiler_stop" not in err    # its C++ log lines


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_batch_split_over_processes_is_timed_and_reported(tmp_path, one_thread, capsys):
    status = train.main(tiny_args(tmp_path, "--no-torch", "--rss-steps", "1", "--processes",
                                  "2", *one_thread))
    assert status == 0
    row = json.loads((tmp_path / "out.json").read_text())["configs"]["custom"]
    assert row["tinygpt_processes"] == 2 and row["tinygpt_threads_per_process"] == 1
    assert row["tinygpt_ms"] > 0 and row["tinygpt_alone_ms"] > 0
    assert row["tinygpt_peak_rss_mb"] > 0
    assert "each batch split over 2 processes of 1 thread" in capsys.readouterr().out
    # More processes than rows: refused, naming both.
    assert train.main(tiny_args(tmp_path, "--no-torch", "--no-rss", "--processes", "3",
                                *one_thread)) == 2
    assert "more than config custom's batch of 2 rows" in capsys.readouterr().err


def test_quiet_stderr_drops_file_descriptor_2_then_restores_it(capfd):
    import os
    with train_profile._quiet_stderr():
        os.write(2, b"dropped\n")
    os.write(2, b"kept\n")
    assert capfd.readouterr().err == "kept\n"


@pytest.mark.parametrize("processes", ["1", pytest.param("2", marks=pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs os.fork"))])
def test_torch_model_does_the_same_work(tmp_path, one_thread, processes):
    # The PyTorch twin starts from tinygpt's weights: the first losses must agree, with
    # tinygpt's batch split over processes too.
    pytest.importorskip("torch")
    status = train.main(tiny_args(tmp_path, "--no-rss", "--processes", processes, *one_thread))
    assert status == 0
    row = json.loads((tmp_path / "out.json").read_text())["configs"]["custom"]
    assert row["torch_ms"] > 0 and row["ratio"] > 0 and row["torch_gflops"] > 0
    ours, theirs = row["tinygpt_steps_ms"], row["torch_steps_ms"]
    assert len(ours) == len(theirs) == 2
    assert row["ratio_paired"] == pytest.approx(np.median(np.array(ours) / np.array(theirs)))
    np.testing.assert_allclose(row["first_loss"]["tinygpt"], row["first_loss"]["torch"],
                               rtol=1e-5)


@pytest.mark.parametrize("gelu", ["none", "tanh"])
def test_the_gelu_choice_reaches_both_models_and_the_report(gelu, tmp_path, one_thread,
                                                            capsys, monkeypatch):
    built = []
    monkeypatch.setattr(train_runners, "GPT", lambda config: built.append(config) or GPT(config))
    status = train.main(tiny_args(tmp_path, "--no-torch", "--no-rss", "--gelu", gelu,
                                  *one_thread))
    assert status == 0
    assert built and all(c.gelu_approximate == gelu for c in built)
    assert json.loads((tmp_path / "out.json").read_text())["gelu"] == gelu
    assert f"GELU {'exact (erf)' if gelu == 'none' else 'tanh'}" in capsys.readouterr().out
    # The subprocess measuring one framework alone gets the same choice.
    calls = []

    class Failed:
        returncode, stdout, stderr = 1, "", "not run"

    monkeypatch.setattr(train.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Failed())
    args = type("Args", (), dict(device="cpu", dropout=0.0, gelu=gelu, seed=1, rss_steps=1,
                                 iters=2, processes=None))()
    train_alone.rss_child("tinygpt", dict(TINY, gelu=gelu), args, 1)
    cmd = calls[0]
    assert cmd[cmd.index("--gelu") + 1] == gelu
    assert json.loads(cmd[cmd.index("--custom") + 1]) == TINY


def test_the_torch_model_takes_the_gelu_choice():
    torch = pytest.importorskip("torch")
    for gelu in ("none", "tanh"):
        runner = train.TorchRunner(torch, dict(TINY, gelu=gelu), 0.0, "cpu", 0)
        assert runner.model.transformer.h[0].mlp.gelu.approximate == gelu


@pytest.mark.parametrize("iters,steps", [(5, train_alone.ALONE_MIN_TIMED), (2, 2)])
def test_a_process_alone_times_a_few_steps_even_past_its_budget(iters, steps, monkeypatch,
                                                                 one_thread, capsys):
    monkeypatch.setattr(train_alone, "ALONE_SECONDS", 0.0)
    status = train.main(["--_rss-child", "tinygpt", "--custom", json.dumps(TINY),
                         "--rss-steps", "1", "--iters", str(iters), *one_thread])
    assert status == 0
    fields = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert fields[0] == "peak_rss_mb" and float(fields[1]) > 0
    assert fields[2] == "median_ms" and float(fields[3]) > 0
    assert fields[4:] == ["steps", str(steps)]


def test_alone_rounds_alternate_their_order_and_report_medians(monkeypatch):
    # (peak RSS MB, median ms, steps) per process, in the order the processes run.
    canned = {"tinygpt": [(90.0, 60.0, 10), (91.0, 50.0, 9), (89.0, 70.0, 10)],
              "torch": [(300.0, 50.0, 10), (310.0, 100.0, 10), (305.0, 70.0, 8)]}
    calls = []

    def fake_child(framework, spec, args, threads):
        calls.append(framework)
        return canned[framework][sum(c == framework for c in calls) - 1]

    monkeypatch.setattr(train_alone, "rss_child", fake_child)
    args = type("Args", (), dict(alone_rounds=3, alone_seconds=0.0))()
    row = train_alone.measure_alone(TINY, args, 1, with_torch=True)
    assert calls == ["tinygpt", "torch", "torch", "tinygpt", "tinygpt", "torch"]
    assert row["ratio_alone_rounds"] == [60 / 50, 50 / 100, 70 / 70]
    assert row["ratio_alone"] == 1.0                       # the median of 1.2, 0.5, 1.0
    assert row["tinygpt_alone_ms"] == 60.0 and row["torch_alone_ms"] == 70.0
    assert row["tinygpt_alone_ms_rounds"] == [60.0, 50.0, 70.0]
    assert row["tinygpt_peak_rss_mb"] == 91.0 and row["torch_peak_rss_mb"] == 310.0
    assert row["tinygpt_alone_steps"] == 9 and row["torch_alone_steps"] == 8


@pytest.mark.parametrize("alone_rounds, budget, rounds", [
    (2, 0.0, 2),                        # no budget: the fewest asked for
    (3, 0.0, 3),
    (2, 0.25, 4),                       # 0.1 s a round: past 0.25 s after round 3, which
                                        # ends its pair
    (1, 0.25, 3),                       # 1 round, then a pair
    (2, 1e9, train.ALONE_MAX_ROUNDS),   # a budget never spent: the cap
])
def test_alone_rounds_are_added_in_pairs_while_under_the_budget(alone_rounds, budget, rounds,
                                                                 monkeypatch):
    clock, calls = [0.0], []

    def fake_child(framework, spec, args, threads):
        calls.append(framework)
        clock[0] += 0.05                # two processes a round: 0.1 s a round
        return (90.0, 60.0, 10)

    monkeypatch.setattr(train_alone, "rss_child", fake_child)
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    args = type("Args", (), dict(alone_rounds=alone_rounds, alone_seconds=budget))()
    row = train_alone.measure_alone(TINY, args, 1, with_torch=True)
    assert len(row["ratio_alone_rounds"]) == rounds and len(calls) == 2 * rounds
    assert calls[:4] == ["tinygpt", "torch", "torch", "tinygpt"][:len(calls)]


def test_a_failed_alone_round_is_left_out_and_no_torch_runs_tinygpt_alone(monkeypatch):
    runs = {"tinygpt": [(90.0, 60.0, 10), (None, None, None)],
            "torch": [(300.0, 40.0, 10), (310.0, 50.0, 10)]}
    row = train.alone_results(runs)
    assert row["ratio_alone_rounds"] == [60 / 40] and row["ratio_alone"] == 60 / 40
    assert row["tinygpt_alone_ms"] == 60.0 and row["torch_alone_ms"] == 45.0
    assert row["tinygpt_peak_rss_mb"] == 90.0
    nothing = train.alone_results({})
    assert nothing["ratio_alone"] is None and nothing["tinygpt_alone_ms"] is None
    assert nothing["torch_peak_rss_mb"] is None and nothing["ratio_alone_rounds"] == []

    calls = []
    monkeypatch.setattr(train_alone, "rss_child",
                        lambda fw, *a: calls.append(fw) or (90.0, 60.0, 10))
    row = train_alone.measure_alone(TINY, type("Args", (), dict(alone_rounds=2, alone_seconds=0.0))(),
                              1, with_torch=False)
    assert calls == ["tinygpt", "tinygpt"] and row["ratio_alone"] is None
    assert row["tinygpt_alone_ms"] == 60.0 and row["torch_alone_ms"] is None


def test_the_paired_ratio_is_the_median_of_the_steps_ratios():
    # A load that doubles both frameworks' times halfway leaves every pair's ratio alone,
    # while the ratio of the medians moves with where the medians fall.
    ours = [1.0, 1.1, 0.9, 2.2, 2.0]
    theirs = [1.0, 1.0, 1.0, 2.0, 2.0]
    assert train.paired_ratio(ours, theirs) == pytest.approx(1.0)
    assert np.median(ours) / np.median(theirs) == pytest.approx(1.1)
