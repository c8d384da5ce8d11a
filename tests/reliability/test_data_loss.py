"""Nothing a user made is lost: one writer per run folder, flags that say false mean false,
generated files written only where asked, logs never shortened, no temporary files left."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from runs import REPO, TINY, corpus, env, leftovers, start, tinygpt, wait_for_line

from tinygpt.cli import COMMANDS
from tinygpt.cli.train import add_arguments, given_values
from tinygpt.train import TrainConfig, Trainer, train

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def quiet(_line):
    pass


# --- 1. one run per out_dir -------------------------------------------------------------------
@linux
def test_a_second_trainer_on_a_busy_out_dir_exits_at_once_naming_the_holder(tmp_path):
    data = corpus(tmp_path)
    first = start(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                  "--max_iters", "100000", "--eval_interval", "50")
    try:
        wait_for_line(first, "iter 0/")
        # Even told to overwrite, the second run may not touch a folder in use.
        for extra in ([], ["--overwrite"], ["--resume"]):
            second = tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                             *extra, timeout=60)
            assert second.returncode == 1, second
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            assert "run is in use by process" in lines[0] and str(first.pid) in lines[0]
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    # One writer: every line of the log is one whole JSON record.
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["event"] for line in lines)
    assert leftovers(tmp_path / "run") == []


def test_the_lock_is_exclusive_in_one_process_too_and_released(tmp_path):
    from tinygpt.files import FolderInUseError, FolderLock
    lock = FolderLock(tmp_path / "f").acquire()
    with pytest.raises(FolderInUseError, match=rf"in use by process {os.getpid()} \(this "
                                               r"process\).*try later"):
        FolderLock(tmp_path / "f", hint="try later").acquire()
    with pytest.raises(FolderInUseError):
        FolderLock(tmp_path / "f").check()
    lock.release()
    assert os.listdir(tmp_path / "f") == []             # the lock file goes with the lock
    with FolderLock(tmp_path / "f"):
        pass


def test_a_trainer_holds_its_out_dir_until_it_ends(tmp_path):
    from tinygpt.files import FolderInUseError
    data = corpus(tmp_path)
    config = TrainConfig(data=data, out_dir=str(tmp_path / "o"), max_iters=2, eval_interval=1,
                         eval_iters=1, n_layer=1, n_head=2, n_embd=16, block_size=8,
                         batch_size=2, processes=1)
    trainer = Trainer(config, log=quiet)
    with pytest.raises(FolderInUseError, match="choose another --out_dir"):
        Trainer(TrainConfig(**{**config.__dict__, "overwrite": True}), log=quiet)
    trainer.run()
    assert not (tmp_path / "o" / ".tinygpt.lock").exists()
    Trainer(TrainConfig(**{**config.__dict__, "resume": True}), log=quiet).close()


def test_two_saves_into_one_pretrained_folder_do_not_mix(tmp_path, monkeypatch):
    import tinygpt as tg
    from tinygpt.files import FolderInUseError, FolderLock
    from tinygpt.model import pretrained
    model = tg.GPT(tg.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    held = FolderLock(tmp_path / "hf").acquire()         # as another save under way would
    with pytest.raises(FolderInUseError, match="another save"):
        pretrained.save_pretrained(model, tmp_path / "hf")
    assert os.listdir(tmp_path / "hf") == [".tinygpt.lock"]
    held.release()
    pretrained.save_pretrained(model, tmp_path / "hf")
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]


def test_a_tokenizer_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    from tinygpt.data import BPETokenizer
    tokenizer = BPETokenizer.train("hello world " * 20, 260)
    (tmp_path / "bpe.json").write_text("someone else's file")
    with pytest.raises(FileExistsError, match="not replaced"):
        tokenizer.save(tmp_path / "bpe.json", overwrite=False)
    assert (tmp_path / "bpe.json").read_text() == "someone else's file"
    assert os.listdir(tmp_path) == ["bpe.json"]
    tokenizer.save(tmp_path / "bpe.json")
    assert BPETokenizer.load(tmp_path / "bpe.json").encode("hello") == tokenizer.encode("hello")


# --- 2. true/false flags ----------------------------------------------------------------------
def bool_flags(parser):
    """The flags that take true or false: those whose value is a bool."""
    return [a.option_strings[0] for a in parser._actions
            if isinstance(a.default, bool) or getattr(a.type, "__name__", "") in ("parse_bool",
                                                                                   "_bool")]


def parser():
    import argparse
    return argparse.ArgumentParser(allow_abbrev=False)


def test_every_boolean_training_flag_reaches_the_config_both_ways():
    train_parser = parser()
    add_arguments(train_parser)
    flags = bool_flags(train_parser)
    booleans = [f for f in TrainConfig.__dataclass_fields__.values() if f.type in (bool, "bool")]
    assert sorted(flags) == sorted(f"--{f.name}" for f in booleans) and len(flags) >= 6
    for field in booleans:
        flag, other = f"--{field.name}", not field.default
        args = [flag, str(other).lower()]
        if field.name == "resume":
            continue        # needs a checkpoint; its parsing is checked below
        config = TrainConfig(**given_values(train_parser.parse_args(args)))
        assert getattr(config, field.name) is other, flag
        assert [f for f in TrainConfig.__dataclass_fields__.values()
                if getattr(config, f.name) != f.default] == [field]
        default = TrainConfig(**given_values(train_parser.parse_args([flag, str(field.default)])))
        assert getattr(default, field.name) is field.default
    assert train_parser.parse_args(["--resume"]).resume is True
    assert train_parser.parse_args(["--resume", "false"]).resume is False
    assert train_parser.parse_args(["--save_checkpoints", "no"]).save_checkpoints is False


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("tokenizer", "plot")] +
                         ["tokenizer train", "tokenizer encode"])
def test_every_boolean_flag_of_every_command_takes_true_and_false(command):
    import importlib
    command_parser = parser()
    name, *action = command.split()
    importlib.import_module(f"tinygpt.cli.{COMMANDS[name]}").add_arguments(command_parser)
    required = []
    if action:
        command_parser = command_parser._subparsers._group_actions[0].choices[action[0]]
        required = {"train": ["--input", "x", "--vocab_size", "300", "--output", "y"],
                    "encode": ["--tokenizer", "gpt2", "--text", "x"]}[action[0]]
    flags = bool_flags(command_parser)
    assert flags
    for flag in flags:
        dest = flag.lstrip("-")
        for text, value in (("true", True), ("false", False), ("", True)):
            argv = [*required, flag] + ([text] if text else [])
            assert getattr(command_parser.parse_args(argv), dest) is value, (command, argv)


def test_save_checkpoints_false_never_replaces_a_checkpoint(tmp_path):
    data = corpus(tmp_path)
    assert tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY).returncode == 0
    before = (tmp_path / "run" / "ckpt.npz").read_bytes()
    done = tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY, "--seed", "7",
                   "--overwrite", "--save_checkpoints", "false")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "ckpt.npz").read_bytes() == before


# --- 3. the op reference generator writes only where asked --------------------------------------
def test_ops_doc_outside_a_checkout_writes_nothing_unasked(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "tinygpt", site / "tinygpt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    tool = tmp_path / "elsewhere" / "tools" / "ops_doc.py"   # no tinygpt checkout beside it
    tool.parent.mkdir(parents=True)
    shutil.copy(REPO / "tools" / "ops_doc.py", tool)
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "ops.md").write_text("my notes")
    child_env = {**env(tmp_path), "PYTHONPATH": str(site)}

    def docs(*args):
        return subprocess.run([sys.executable, str(tool), *args], cwd=work,
                              env=child_env, capture_output=True, text=True, timeout=120)

    done = docs()
    assert done.returncode == 1 and "--out" in done.stderr and "Traceback" not in done.stderr
    assert (work / "docs" / "ops.md").read_text() == "my notes"
    done = docs("--out", "docs/ops.md")        # asked, but not over a file it did not write
    assert done.returncode == 1 and "--force" in done.stderr
    assert (work / "docs" / "ops.md").read_text() == "my notes"
    assert docs("--out", "ref.md").returncode == 0
    assert docs("--out", "ref.md").returncode == 0          # its own file: regenerated
    assert docs("--out", "docs/ops.md", "--force").returncode == 0
    assert (work / "docs" / "ops.md").read_text().startswith("# Op reference\n")


# --- 4. an existing run's log is never shortened ----------------------------------------------
def test_a_new_run_does_not_truncate_an_existing_runs_log(tmp_path):
    data = corpus(tmp_path)
    settings = dict(data=data, out_dir=str(tmp_path / "run"), max_iters=4, eval_interval=2,
                    eval_iters=1, n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=2,
                    processes=1, log_interval=1)
    train(log=quiet, **settings)
    log = (tmp_path / "run" / "log.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(log=quiet, **{**settings, "save_checkpoints": False})
    (tmp_path / "run" / "ckpt.npz").unlink()              # a log alone is a run too
    with pytest.raises(FileExistsError, match="log.jsonl"):
        train(log=quiet, **{**settings, "save_checkpoints": False})
    assert (tmp_path / "run" / "log.jsonl").read_bytes() == log


# --- 5. temporary files of killed writers -----------------------------------------------------
def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path):
    data = corpus(tmp_path)
    assert tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY).returncode == 0
    run = tmp_path / "run"
    stale = run / f".ckpt.npz.{dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"\0" * 100_000)
    alive = run / f".ckpt.npz.{os.getpid()}.0123abcd.tmp"      # a writer still at work
    alive.write_bytes(b"\0")
    done = tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                   "--resume", "--max_iters", "21", "--save_checkpoints", "false")
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and alive.exists()
    alive.unlink()
    assert leftovers(run) == []
    np.testing.assert_equal(sorted(os.listdir(run)), ["ckpt.npz", "log.jsonl"])
