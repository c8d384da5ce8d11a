"""A user's mistake gives one line on stderr and a non-zero status, never a traceback; Ctrl-C
saves and says how to resume; a dead or stopped data-parallel worker never hangs the trainer.
Real processes and real signals where the defect involves them."""

import contextlib
import os
import signal
import sys
import time

import numpy as np
import pytest

from runs import (TINY, children, corpus, leftovers, processes_mentioning, start, tinygpt,
                  wait_for_line)

import tinygpt as tg
from tinygpt.cli import main
from tinygpt.data import corpus as corpus_module
from tinygpt.model.checkpoint import load_checkpoint

linux = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "fork"),
                           reason="Linux: /proc, fork")
root = os.name == "posix" and os.geteuid() == 0


def one_line_error(capsys, status, *needles):
    err = capsys.readouterr().err
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --- 14. one line, not a traceback ------------------------------------------------------------
def test_bad_paths_and_devices_give_one_line(tmp_path, capsys):
    data = corpus(tmp_path)
    (tmp_path / "a_file").write_text("x")
    status = main(["train", "--data", str(tmp_path), "--out_dir", str(tmp_path / "o")])
    one_line_error(capsys, status, "is a folder")
    status = main(["train", "--data", data, "--out_dir", str(tmp_path / "a_file" / "run"),
                   "--max_iters", "1", "--n_layer", "1", "--n_embd", "16", "--n_head", "2",
                   "--block_size", "8"])
    one_line_error(capsys, status, "a_file", "a file (not a folder) is in the way")
    status = main(["sample", "--out_dir", str(tmp_path), "--device", "tpu"])
    one_line_error(capsys, status, "unknown device 'tpu'")
    if not tg.autograd.backend.cuda_available():
        status = main(["train", "--data", data, "--device", "cuda", "--out_dir",
                       str(tmp_path / "o")])
        one_line_error(capsys, status, "CuPy")
        status = main(["sample", "--out_dir", str(tmp_path), "--device", "cuda"])
        one_line_error(capsys, status, "CuPy")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(root or os.name != "posix", reason="root reads and writes anything")
def test_unreadable_data_and_unwritable_out_dir_give_one_line(tmp_path, capsys):
    data = corpus(tmp_path)
    os.chmod(data, 0)
    status = main(["train", "--data", data, "--out_dir", str(tmp_path / "o")])
    one_line_error(capsys, status, "Permission denied")
    os.chmod(data, 0o644)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    status = main(["train", "--data", data, "--out_dir", str(locked / "run"), "--max_iters",
                   "1", "--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "8"])
    one_line_error(capsys, status, "run")


def test_a_failed_download_is_one_line_with_the_way_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYGPT_SHAKESPEARE", raising=False)
    monkeypatch.setattr(corpus_module.shakespeare_path, "__defaults__",
                        ("http://127.0.0.1:9/input.txt", 2.0, False))   # nothing listens
    status = main(["train", "--data", "shakespeare", "--out_dir", str(tmp_path / "o")])
    one_line_error(capsys, status, "could not download", "TINYGPT_SHAKESPEARE")


@pytest.mark.parametrize("error, needle", [
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (ValueError("first line\n  second line"), "first line; second line"),
    (OSError("disk full"), "disk full"),
])
def test_what_a_user_can_cause_is_one_line(capsys, error, needle):
    from tinygpt.cli.common import run_command

    def command(args):
        raise error

    assert run_command(command, None, name="tinygpt x") == 1
    err = capsys.readouterr().err
    assert err == f"tinygpt x: error: {err.split('error: ', 1)[1]}" and needle in err
    assert len(err.splitlines()) == 1


def test_a_programming_error_keeps_its_traceback():
    from tinygpt.cli.common import run_command

    def command(args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(command, None)


@linux
def test_sample_into_a_closed_pipe_exits_quietly(tmp_path):
    data = corpus(tmp_path)
    assert tinygpt(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY).returncode == 0
    child = start(tmp_path, "sample", "--out_dir", "run", "--num_tokens", "100000",
                  "--prompt", "It is")
    assert child.stdout.read(10).startswith("It is")
    child.stdout.close()                    # `| head -c 10`
    err = child.stderr.read()
    assert child.wait(timeout=60) == 141
    assert err == ""


# --- Ctrl-C: save, say how to resume, exit 130; the resume is exact ---------------------------
def iteration(path):
    return load_checkpoint(path)[1]["iter_num"]


def final_parameters(path):
    return {k: v for k, v in load_checkpoint(path)[0].items() if k.startswith("model/")}


@linux
def test_ctrl_c_saves_the_current_iteration_and_the_resume_is_exact(tmp_path):
    data = corpus(tmp_path)
    run = start(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                "--max_iters", "100000", "--eval_interval", "1000", "--log_interval", "1",
                "--dropout", "0.1")
    try:
        wait_for_line(run, "iter 30/")
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    stopped = iteration(tmp_path / "run" / "ckpt.npz")
    assert stopped > 30                                  # not the evaluation at 0
    message = err.strip().splitlines()[-1]
    assert f"at iteration {stopped}" in message and "--resume" in message
    assert "Traceback" not in err
    end = stopped + 7
    resumed = tinygpt(tmp_path, "train", "--out_dir", "run", "--resume", "--max_iters", end)
    assert resumed.returncode == 0, resumed.stderr
    straight = tinygpt(tmp_path, "train", "--data", data, "--out_dir", "straight", *TINY,
                       "--max_iters", end, "--eval_interval", "1000", "--log_interval", "1",
                       "--dropout", "0.1")
    assert straight.returncode == 0, straight.stderr
    a = final_parameters(tmp_path / "run" / "ckpt.npz")
    b = final_parameters(tmp_path / "straight" / "ckpt.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert leftovers(tmp_path / "run") == []


# --- 15. lost and stopped workers ---------------------------------------------------------------
@linux
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_lost_or_stopped_worker_ends_the_run_with_a_checkpoint(tmp_path, how):
    data = corpus(tmp_path)
    run = start(tmp_path, "train", "--data", data, "--out_dir", "run", *TINY,
                "--processes", "2", "--max_iters", "100000", "--eval_interval", "1000",
                "--log_interval", "1", TINYGPT_WORKER_TIMEOUT=3)
    try:
        wait_for_line(run, "iter 20/")
        worker = children(run.pid)
        assert len(worker) == 1
        os.kill(worker[0], getattr(signal, how))
        started = time.monotonic()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    assert time.monotonic() - started < 60
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "data-parallel worker 1" in lines[0]
    if how == "SIGSTOP":
        assert f"(pid {worker[0]}) has not answered in 3 s" in lines[0]
    stopped = iteration(tmp_path / "run" / "ckpt.npz")
    assert f"at iteration {stopped}" in lines[0] and stopped > 20
    assert processes_mentioning(str(tmp_path / "corpus.txt")) == []     # the worker is gone
    resumed = tinygpt(tmp_path, "train", "--out_dir", "run", "--resume", "--max_iters",
                      stopped + 3)
    assert resumed.returncode == 0, resumed.stderr


class Hung(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds):
    """Turn a hang into a failure: raise Hung after `seconds`."""
    def alarm(signum, frame):
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@linux
@pytest.mark.parametrize("columns", [8, 200_000], ids=["waiting for its answer",
                                                     "sending it more than a pipe holds"])
def test_a_stopped_worker_does_not_hang_data_parallel(columns):
    from tinygpt.train.parallel import DataParallel, WorkerError
    tg.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
    x = np.random.default_rng(0).integers(0, 11, (4, 8))
    dp = DataParallel(model, 2, timeout=1.0)
    pid = dp.workers[0][0]
    try:
        dp.forward_backward([(x, x)])           # a healthy step first
        model.zero_grad(set_to_none=True)
        os.kill(pid, signal.SIGSTOP)
        big = np.zeros((4, columns), np.int64)  # 3 MB a shard in the second case
        with deadline(60), pytest.raises(WorkerError, match=rf"worker 1 \(pid {pid}\) has "
                                                             r"not answered in 1 s"):
            dp.forward_backward([(big, big)])
    finally:
        if dp.workers:
            os.kill(pid, signal.SIGKILL)
            dp.close()
    with pytest.raises(ChildProcessError):      # killed and reaped
        os.waitpid(pid, os.WNOHANG)
    assert all(p.grad is None for p in model.parameters())
