"""Training statistics (`--stats true`): gradient norms, update-to-data ratios and block
activations in log.jsonl, measured independently here, and a run left unchanged by them."""

import json
import math

import numpy as np
import pytest

from tinygpt.cli.train import add_arguments, given_values
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train.stats import StatsCollector, read_log

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 40


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def tiny(corpus, out_dir, **overrides):
    values = dict(data=corpus, out_dir=str(out_dir), n_layer=2, n_head=2, n_embd=16, bias=True,
                  block_size=16, batch_size=4, dropout=0.1, max_iters=12, eval_interval=6,
                  eval_iters=2, log_interval=5, warmup_iters=3, lr_decay_iters=12,
                  learning_rate=3e-3, save_checkpoints=False)
    values.update(overrides)
    return TrainConfig(**values)


def quiet(_line):
    pass


def test_stats_records_on_logged_iterations(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, stats=True), log=quiet)
    trainer.run()
    log = read_log(tmp_path / "log.jsonl")
    names = [name for name, _ in trainer.model.named_parameters()]
    zero_at_start = {name for name, p in Trainer(tiny(corpus, tmp_path / "fresh"),
                                                 log=quiet).model.named_parameters()
                     if not p.numpy().any()}

    # One stats record after each train line: iterations 0, 5, 10 and the last, 11.
    assert [r["iter"] for r in log["stats"]] == [r["iter"] for r in log["train"]] == [0, 5, 10, 11]
    for record in log["stats"]:
        assert list(record["params"]) == names
        assert list(record["activations"]) == ["transformer.h.0", "transformer.h.1"]
        for name, values in record["params"].items():
            assert math.isfinite(values["grad_norm"]) and values["grad_norm"] > 0, name
            ratio = values["update_ratio"]
            if record["iter"] == 0 and name in zero_at_start:
                assert ratio is None, name          # ||p_before|| = 0: no ratio
            else:
                assert math.isfinite(ratio) and ratio > 0, (record["iter"], name, ratio)
        for block, values in record["activations"].items():
            assert math.isfinite(values["mean"]), block
            assert math.isfinite(values["std"]) and values["std"] > 0, block
    assert zero_at_start and all(n.endswith(".bias") for n in zero_at_start)


def test_stats_match_an_independent_measurement(corpus, tmp_path):
    """grad_norm, update_ratio and the activations of one logged step, recomputed here
    from the gradients handed to the optimizer, the parameters around its step and the
    blocks' outputs of both micro-batches."""
    trainer = Trainer(tiny(corpus, tmp_path, stats=True, grad_clip=0.0, dropout=0.0,
                           gradient_accumulation_steps=2), log=quiet)
    trainer.step()              # a first step, so that the biases are no longer zero
    trainer.stats.pop()
    trainer.iter_num = 5
    named = list(trainer.model.named_parameters())
    before = {name: p.numpy().copy() for name, p in named}
    grads = {}
    step = trainer.optimizer.step

    def recording_step():
        grads.update({name: p.grad.numpy().copy() for name, p in named})
        step()

    trainer.optimizer.step = recording_step
    outputs = {}
    for i, block in enumerate(trainer.model.transformer.h):
        block.register_forward_hook(
            lambda module, inputs, out, i=i: outputs.setdefault(i, []).append(out.numpy()))

    trainer.step()
    record = trainer.stats.pop()

    assert record["event"] == "stats" and record["iter"] == 5
    for name, p in named:
        after = p.numpy()
        expected_ratio = np.linalg.norm(after - before[name]) / np.linalg.norm(before[name])
        values = record["params"][name]
        np.testing.assert_allclose(values["grad_norm"], np.linalg.norm(grads[name]), rtol=1e-5)
        np.testing.assert_allclose(values["update_ratio"], expected_ratio, rtol=1e-4)
    for i in range(2):
        assert len(outputs[i]) == 2                 # both micro-batches
        x = np.concatenate([o.ravel() for o in outputs[i]]).astype(np.float64)
        values = record["activations"][f"transformer.h.{i}"]
        np.testing.assert_allclose(values["mean"], x.mean(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(values["std"], x.std(), rtol=1e-6)


def test_stats_do_not_change_the_run(corpus, tmp_path):
    """Same parameters and losses with and without statistics (dropout on: the RNG must
    not be touched)."""
    runs = {}
    for stats in (False, True):
        out = tmp_path / str(stats)
        trainer = Trainer(tiny(corpus, out, stats=stats, max_iters=8, log_interval=3), log=quiet)
        trainer.run()
        log = read_log(out / "log.jsonl")
        assert bool(log["stats"]) is stats
        runs[stats] = ({k: v.numpy() for k, v in trainer.model.state_dict().items()},
                       [r["loss"] for r in log["train"]], [r["val_loss"] for r in log["eval"]])
    (plain, plain_losses, plain_val), (with_stats, losses, val) = runs[False], runs[True]
    assert plain_losses == losses and plain_val == val
    for key in plain:
        assert np.array_equal(plain[key], with_stats[key]), key


def test_unlogged_iterations_collect_nothing(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, stats=True), log=quiet)
    trainer.iter_num = 1                           # log_interval 5: not logged
    calls = []
    copy_before = trainer.stats.before_update
    trainer.stats.before_update = lambda: calls.append("before") or copy_before()
    trainer.step()
    assert calls == [] and trainer.stats.pop() is None
    assert trainer.stats._moments == {}            # the hooks returned at once
    trainer.iter_num = 5
    trainer.step()
    assert calls == ["before"] and trainer.stats.pop()["iter"] == 5


def test_stats_off_adds_no_hooks_and_no_records(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, max_iters=6), log=quiet)
    assert trainer.stats is None
    assert all(not block._forward_hooks for block in trainer.model.transformer.h)
    trainer.run()
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines and not any(r["event"] == "stats" for r in lines)


def test_collector_close_removes_its_hooks(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, stats=True), log=quiet)
    blocks = list(trainer.model.transformer.h)
    assert all(len(block._forward_hooks) == 1 for block in blocks)
    trainer.stats.close()
    assert all(not block._forward_hooks for block in blocks)


def test_collector_needs_a_gpt():
    from tinygpt import nn
    with pytest.raises(TypeError, match="transformer.h"):
        StatsCollector(nn.Linear(2, 2))


def test_cli_stats_option():
    import argparse
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert TrainConfig(**given_values(parser.parse_args(["--stats", "true"]))).stats is True
    assert TrainConfig(**given_values(parser.parse_args([]))).stats is False


def test_stats_on_each_device(corpus, tmp_path, device):
    trainer = Trainer(tiny(corpus, tmp_path, stats=True, device=device, max_iters=3,
                           log_interval=2), log=quiet)
    trainer.run()
    stats = read_log(tmp_path / "log.jsonl")["stats"]
    assert [r["iter"] for r in stats] == [0, 2]
    last = stats[-1]
    assert all(math.isfinite(v["grad_norm"]) and math.isfinite(v["update_ratio"])
               for v in last["params"].values())
    assert all(math.isfinite(v["std"]) for v in last["activations"].values())
