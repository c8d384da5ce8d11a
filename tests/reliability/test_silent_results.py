"""No silent wrong results: abbreviated flags are refused, a resumed run refuses changes it
cannot honour (and says which settings changed), and a whole config is checked before
anything is written. (Sampling at extreme temperatures and infinite logits:
tests/model/test_gpt_generate.py.)"""

import importlib
import subprocess
import sys

import pytest

from runs import TINY, corpus, env, tinygpt

from tinygpt.cli import COMMANDS, main
from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import TrainConfig, Trainer


def quiet(_line):
    pass


# --- 9. no prefix matching ----------------------------------------------------------------------
@pytest.mark.parametrize("argv, abbreviation", [
    (["train", "--lr", "100"], "--lr"),                 # not --lr_decay_iters
    (["train", "--max_it", "5"], "--max_it"),
    (["sample", "--num_tok", "5"], "--num_tok"),
    (["tokenizer", "train", "--input", "x", "--vocab_size", "300", "--output", "o",
      "--verb"], "--verb"),
    (["gradcheck", "--op", "add"], "--op"),
    (["plot", "--output", "x"], "--output"),
])
def test_abbreviated_flags_are_errors(argv, abbreviation, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {abbreviation}" in err
    assert len(err.strip().splitlines()) == 1


def test_every_parser_refuses_abbreviations():
    from tinygpt.cli.common import Parser
    for name, module in COMMANDS.items():
        parser = Parser()
        importlib.import_module(f"tinygpt.cli.{module}").add_arguments(parser)
        parsers = [parser] + [sub for action in parser._actions
                              if hasattr(action, "choices") and isinstance(action.choices, dict)
                              for sub in action.choices.values()]
        assert all(not p.allow_abbrev for p in parsers), name


# --- 11. resume ----------------------------------------------------------------------------------
def settings(tmp_path, **overrides):
    values = dict(data=corpus(tmp_path), out_dir=str(tmp_path / "run"), max_iters=6,
                  eval_interval=3, eval_iters=1, n_layer=1, n_head=2, n_embd=16, block_size=8,
                  batch_size=2, processes=1, learning_rate=3e-3, warmup_iters=1,
                  lr_decay_iters=6, log_interval=1)
    values.update(overrides)
    return values


def test_resume_refuses_model_changes_and_takes_the_rest_from_the_checkpoint(tmp_path):
    Trainer(TrainConfig(**settings(tmp_path)), log=quiet).run()
    base = dict(out_dir=str(tmp_path / "run"), resume=True)
    for name, value in (("n_layer", 2), ("n_embd", 32), ("tokenizer", "gpt2"),
                        ("dtype", "float64"), ("seed", 5)):
        with pytest.raises(ValueError, match=rf"--{name} .*the checkpoint's"):
            Trainer(TrainConfig(**base, **{name: value}), log=quiet, given={name})
    lines = []
    trainer = Trainer(TrainConfig(**base, max_iters=9, batch_size=3), log=lines.append,
                      given={"out_dir", "resume", "max_iters", "batch_size"})
    # Not given: the saved run's values, not TrainConfig's defaults.
    assert trainer.config.learning_rate == 3e-3 and trainer.config.n_embd == 16
    assert trainer.config.max_iters == 9 and trainer.config.batch_size == 3
    assert "changed: batch_size 2 -> 3, max_iters 6 -> 9" in lines[0]
    trainer.run()
    assert trainer.sampler.batch_size == 3


def test_resume_refuses_an_edited_data_file_unless_allowed(tmp_path):
    values = settings(tmp_path)
    Trainer(TrainConfig(**values), log=quiet).run()
    saved = load_checkpoint(tmp_path / "run" / "ckpt.npz")[1]["data"]
    text = open(values["data"], encoding="utf-8").read()
    assert saved["chars"] == len(text) and len(saved["sha256"]) == 64
    with open(values["data"], "w", encoding="utf-8") as f:
        f.write(text.replace("wife", "life"))         # the same size, other bytes
    resume = dict(out_dir=values["out_dir"], resume=True, max_iters=7)
    with pytest.raises(ValueError, match="training data differs.*--allow_data_change"):
        Trainer(TrainConfig(**resume), log=quiet, given=set(resume))
    lines = []
    Trainer(TrainConfig(**resume, allow_data_change=True), log=lines.append,
            given=set(resume)).run()
    assert any(line.startswith("warning: the training data differs") for line in lines)
    # Another file entirely: a changed --data flag needs the same permission.
    other = tmp_path / "other.txt"
    other.write_text(text.upper(), encoding="utf-8")
    with pytest.raises(ValueError, match="--data .*--allow_data_change"):
        Trainer(TrainConfig(**resume, data=str(other)), log=quiet, given={*resume, "data"})


def test_resume_on_the_command_line_keeps_the_saved_settings(tmp_path):
    data = corpus(tmp_path)
    first = tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                    "--learning_rate", "0.003")
    assert first.returncode == 0, first.stderr
    again = tinygpt(tmp_path, "train", "--out_dir", "run", "--resume", "--max_iters", "25")
    assert again.returncode == 0, again.stderr
    assert "changed: max_iters 20 -> 25" in again.stdout
    config = load_checkpoint(tmp_path / "run" / "ckpt.npz")[1]["train_config"]
    assert config["learning_rate"] == 0.003 and config["n_embd"] == 32
    bad = tinygpt(tmp_path, "train", "--out_dir", "run", "--resume", "--n_head", "4")
    assert bad.returncode == 1 and "--n_head 4 (the checkpoint's: 2)" in bad.stderr


# --- 13. a whole config checked before anything is written ---------------------------------------
@pytest.mark.parametrize("flag, value, match", [
    ("--grad_clip", "-1", "grad_clip must be a finite number >= 0"),
    ("--learning_rate", "inf", "learning_rate must be a finite number"),
    ("--schedule", "bogus", "unknown learning-rate schedule 'bogus'"),
    ("--min_lr", "0.1", "min_lr must be in"),
    ("--beta2", "1.5", r"beta2 must be a finite number in \[0.0, 1.0\), got 1.5"),
    ("--dropout", "1", "dropout must be a finite number in"),
    ("--n_head", "3", "divisible by n_head"),
    ("--weight_decay", "nan", "weight_decay"),
    ("--tokenizer", "", "tokenizer must not be empty"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, flag, value,
                                                            match):
    out = tmp_path / "run"
    assert main(["train", "--out_dir", str(out), flag, value]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not out.exists()


def test_sample_refuses_a_negative_count(tmp_path, capsys):
    assert main(["sample", "--out_dir", str(tmp_path), "--num_samples", "-3"]) == 1
    assert "--num_samples must be >= 1, got -3" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/zero, RLIMIT_AS")
def test_a_device_as_data_is_refused_before_it_is_read(tmp_path):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from tinygpt.cli import main\n"
            "sys.exit(main(['train', '--data', '/dev/zero', '--out_dir', 'run']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "not a regular file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
