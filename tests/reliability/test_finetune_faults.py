"""Fine-tuning keeps the trainer's promises: the out_dir's lock (a folder another process
writes is never used, --overwrite included), one process only (MPI ranks refused), Ctrl-C
saves the classifier so far (exit 130), and task data that leaves a row without an ending
refused before anything runs."""

import json
import sys
from pathlib import Path

import pytest

from tinygpt.cli import main as cli_main
from tinygpt.data.cloze import ClozeExample, ClozeTask, save_task
from tinygpt.files import FolderLock
from tinygpt.train import finetune as finetune_module
from tinygpt.train.finetune import load_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from test_finetune import SMALL, yes_no_task  # noqa: E402


def finetune(task, out, *extra):
    return cli_main(["finetune", "--task", task, "--out_dir", str(out), *SMALL, *extra])


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_another_run_holds_is_refused(tmp_path, capsys, overwrite):
    task = yes_no_task(tmp_path / "task", n=(8, 4, 4))
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.npz").write_bytes(b"another run's checkpoint")
    with FolderLock(out):           # a trainer (or another fine-tune) writing there
        status = finetune(task, out, *(["--overwrite"] if overwrite else []), "--epochs", "1")
    err = capsys.readouterr().err
    assert status == 1 and "in use by process" in err and err.count("\n") == 1
    assert (out / "ckpt.npz").read_bytes() == b"another run's checkpoint"
    assert not (out / "results.json").exists()


def test_a_new_folder_another_run_holds_is_refused(tmp_path, capsys):
    task = yes_no_task(tmp_path / "task", n=(8, 4, 4))
    out = tmp_path / "run"
    with FolderLock(out):
        assert finetune(task, out, "--epochs", "1") == 1
    assert "in use by process" in capsys.readouterr().err
    assert not (out / "ckpt.npz").exists()


def test_the_lock_is_held_while_fine_tuning_and_released_after(tmp_path, capsys, monkeypatch):
    task = yes_no_task(tmp_path / "task", n=(8, 4, 4))
    out = tmp_path / "run"
    seen = []
    real = finetune_module.accuracy

    def accuracy(*args, **kwargs):
        with pytest.raises(Exception, match="in use by process"):
            FolderLock(out).acquire()
        seen.append(True)
        return real(*args, **kwargs)
    monkeypatch.setattr(finetune_module, "accuracy", accuracy)
    assert finetune(task, out, "--epochs", "1") == 0, capsys.readouterr().err
    assert seen
    FolderLock(out).acquire().release()      # released at the end
    assert not (out / ".tinygpt.lock").exists()


@pytest.mark.parametrize("variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_mpi_ranks_are_refused(tmp_path, capsys, monkeypatch, variable):
    task = yes_no_task(tmp_path / "task", n=(8, 4, 4))
    monkeypatch.setenv(variable, "2")
    assert finetune(task, tmp_path / "run", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "2 MPI ranks" in err and "without mpiexec" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_the_classifier_so_far(tmp_path, capsys, monkeypatch):
    task = yes_no_task(tmp_path / "task", n=(32, 4, 4))
    out = tmp_path / "run"
    calls = []
    real = finetune_module.clip_grad_norm_

    def clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(finetune_module, "clip_grad_norm_", clip)
    status = finetune(task, out, "--epochs", "2")
    err = capsys.readouterr().err
    assert status == 130
    assert "interrupted at step 2/8" in err and "ckpt.npz" in err and err.count("\n") == 1
    model, tokenizer, special = load_classifier(out)
    assert model.config.vocab_size == tokenizer.vocab_size + 3
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted_at_step"] == 2 and results["test_accuracy"] is None
    assert not (out / ".tinygpt.lock").exists()


def test_a_block_size_that_leaves_no_ending_is_refused(tmp_path, capsys):
    task = yes_no_task(tmp_path / "task", n=(8, 4, 4))
    out = tmp_path / "run"
    status = cli_main(["finetune", "--task", task, "--out_dir", str(out), "--n_layer", "1",
                       "--n_head", "2", "--n_embd", "16", "--block_size", "3",
                       "--epochs", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "block_size 3" in err and err.count("\n") == 1
    assert not out.exists()


def test_an_ending_with_no_tokens_is_refused(tmp_path, capsys):
    good = [ClozeExample("abc\n", ["yes", "no"], 0)] * 4
    bad = good[:2] + [ClozeExample("abc\n", ["yes", ""], 0)]
    save_task(ClozeTask(good, bad, good, pretrain_text="abc\nyesno\n"), tmp_path / "task")
    out = tmp_path / "run"
    assert finetune(str(tmp_path / "task"), out, "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "val example 3" in err and "ending 2" in err and "no tokens" in err
    assert not out.exists()
