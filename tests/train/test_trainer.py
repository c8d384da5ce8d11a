"""The training loop: exact resume, checkpoints, non-finite losses, logs, the CLI."""

import json
import os

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.cli import main as cli_main
from tinygpt.model.checkpoint import CheckpointError, load_checkpoint
from tinygpt.train import TrainConfig, Trainer, TrainingError, load_for_inference

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 40


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def tiny(corpus, out_dir, **overrides):
    values = dict(data=corpus, out_dir=str(out_dir), n_layer=1, n_head=2, n_embd=16,
                  block_size=16, batch_size=4, dropout=0.1, max_iters=20, eval_interval=5,
                  eval_iters=2, log_interval=5, warmup_iters=3, lr_decay_iters=20,
                  learning_rate=3e-3)
    values.update(overrides)
    return TrainConfig(**values)


def quiet(_line):
    pass


def parameters(trainer):
    return {k: v.numpy() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs os.fork"))])
def test_resume_is_bit_identical(corpus, tmp_path, processes):
    # With dropout: the workers' masks must follow the saved generator too.
    straight = Trainer(tiny(corpus, tmp_path / "a", max_iters=100, eval_interval=25,
                            processes=processes), log=quiet)
    straight.run()

    first = Trainer(tiny(corpus, tmp_path / "b", max_iters=50, eval_interval=25,
                         processes=processes), log=quiet)
    first.run()
    second = Trainer(tiny(corpus, tmp_path / "b", max_iters=100, eval_interval=25, resume=True,
                          processes=processes), log=quiet)
    assert second.iter_num == 50
    second.run()

    a, b = parameters(straight), parameters(second)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    # The optimizer moments match too, so the runs would keep agreeing.
    sa, sb = straight.optimizer.state_dict(), second.optimizer.state_dict()
    for index, state in sa["state"].items():
        for name, value in state.items():
            assert np.array_equal(np.asarray(value), np.asarray(sb["state"][index][name]))


def test_resume_without_checkpoint_names_the_file(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt.npz"):
        Trainer(tiny(corpus, tmp_path / "none", resume=True), log=quiet)


def test_existing_checkpoint_is_never_overwritten_silently(corpus, tmp_path):
    Trainer(tiny(corpus, tmp_path, max_iters=5), log=quiet).run()
    before = (tmp_path / "ckpt.npz").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny(corpus, tmp_path, max_iters=5), log=quiet)
    assert (tmp_path / "ckpt.npz").read_bytes() == before
    Trainer(tiny(corpus, tmp_path, max_iters=5, overwrite=True), log=quiet).run()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, max_iters=30), log=quiet)
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(idx, targets=None, **kw):
        logits, loss = forward(idx, targets, **kw)
        if trainer.model.training:
            calls["n"] += 1
            if trainer.iter_num == 12:
                loss = loss * float("nan")
        return logits, loss

    trainer.model.forward = poisoned
    with pytest.raises(TrainingError, match="iteration 12"):
        trainer.run()
    _, meta = load_checkpoint(tmp_path / "ckpt.npz")
    assert meta["iter_num"] == 10  # the evaluation before the failure wrote it


def test_truncated_and_foreign_checkpoints_get_clear_errors(corpus, tmp_path):
    Trainer(tiny(corpus, tmp_path, max_iters=5), log=quiet).run()
    data = (tmp_path / "ckpt.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz"):
        load_checkpoint(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tinygpt checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.npz")


def test_log_file_records_training_and_evaluation(corpus, tmp_path):
    lines = []
    Trainer(tiny(corpus, tmp_path, max_iters=10), log=lines.append).run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["event"] == "eval"]
    train = [r for r in records if r["event"] == "train"]
    assert [r["iter"] for r in evals] == [0, 5, 10]
    assert all(np.isfinite(r["val_loss"]) and np.isfinite(r["train_loss"]) for r in evals)
    assert [r["iter"] for r in train] == [0, 5, 9]
    assert all(r["ms_per_iter"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert any("ms/iter" in line and "tok/s" in line and "lr" in line for line in lines)


def test_evaluation_is_deterministic_and_does_not_move_training(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, max_iters=0), log=quiet)
    state = trainer.sampler.state_dict()
    rng = tg.autograd.backend.get_rng_state()
    assert trainer.evaluate() == trainer.evaluate()
    assert trainer.sampler.state_dict() == state
    assert tg.autograd.backend.get_rng_state() == rng
    assert trainer.model.training


def test_training_lowers_the_loss_and_the_checkpoint_samples(corpus, tmp_path):
    history = Trainer(tiny(corpus, tmp_path, max_iters=100, dropout=0.0, eval_interval=50,
                           learning_rate=1e-2, lr_decay_iters=100), log=quiet).run()
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.5
    model, tokenizer = load_for_inference(tmp_path)
    assert not model.training
    out = model.generate(tg.tensor([tokenizer.encode("It is")]), 10, seed=0)
    assert len(tokenizer.decode(out.numpy()[0].tolist())) == 15


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="float8")
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")


def test_text_shorter_than_a_window_is_refused(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abc", encoding="utf-8")
    with pytest.raises(ValueError):
        Trainer(tiny(str(path), tmp_path / "out"), log=quiet)
    assert not (tmp_path / "out" / "ckpt.npz").exists()


def test_cli_train_then_sample(corpus, tmp_path, capsys):
    out = str(tmp_path / "run")
    status = cli_main(["train", "--data", corpus, "--out_dir", out, "--n_layer", "1",
                       "--n_head", "2", "--n_embd", "16", "--block_size", "16",
                       "--batch_size", "4", "--max_iters", "6", "--eval_interval", "3",
                       "--eval_iters", "1", "--log_interval", "2"])
    assert status == 0
    assert os.path.exists(os.path.join(out, "ckpt.npz"))
    printed = capsys.readouterr().out
    assert "step 6: train loss" in printed
    status = cli_main(["sample", "--out_dir", out, "--prompt", "It is", "--num_tokens", "20",
                       "--seed", "3"])
    assert status == 0
    text = capsys.readouterr().out
    assert text.startswith("It is") and len(text.splitlines()[0]) >= 5


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    status = cli_main(["train", "--data", str(tmp_path / "missing.txt"), "--out_dir",
                       str(tmp_path / "o")])
    assert status == 1
    assert "missing.txt" in capsys.readouterr().err
    status = cli_main(["sample", "--out_dir", str(tmp_path / "nothing")])
    assert status == 1
    assert "ckpt.npz" in capsys.readouterr().err
    status = cli_main(["train", "--processes", "-1", "--out_dir", str(tmp_path / "o")])
    assert status == 1
    assert "processes must be 0 (auto) or a positive integer, got -1" in \
        capsys.readouterr().err


def test_cli_sample_rejects_unknown_characters(corpus, tmp_path, capsys):
    Trainer(tiny(corpus, tmp_path, max_iters=2), log=quiet).run()
    status = cli_main(["sample", "--out_dir", str(tmp_path), "--prompt", "Zebra§"])
    assert status == 1
    assert "'Z'" in capsys.readouterr().err
