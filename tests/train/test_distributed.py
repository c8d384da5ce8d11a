"""Training over MPI ranks (real `mpiexec -n 2` runs): two ranks of B rows each train as one
process on the union of their 2B rows, and as the fork path does; a stopped run resumes bit
for bit; a rank that fails, dies, stops or hangs ends the run in bounded time, named;
Ctrl-C on mpiexec stops every rank with a checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mpi_runs import (MPIEXEC, TINY, assert_close, checkpoint, corpus, env, finish, needs_mpi,
                      start, train, wait_for_line)

import tinygpt as tg
from tinygpt.data import BatchSampler
from tinygpt.train import TrainConfig, Trainer, evaluate, load_for_inference
from tinygpt.train.ddp import rank_streams
from tinygpt.train.distributed import process_state

pytestmark = needs_mpi


class UnionSampler:
    """The batches of ranks 0..N-1, stacked: what one process trains on to equal N ranks."""

    def __init__(self, trainer, ranks, batch_size):
        cfg = trainer.config
        self.samplers = [BatchSampler(trainer.train_data, cfg.block_size, batch_size,
                                      seed=rank_streams(cfg.seed, r)[0]) for r in range(ranks)]

    def get_batch(self):
        xs, ys = zip(*(s.get_batch() for s in self.samplers))
        return (tg.tensor(np.concatenate([x.numpy() for x in xs])),
                tg.tensor(np.concatenate([y.numpy() for y in ys])))

    def state_dict(self):
        return [s.state_dict() for s in self.samplers]

    def load_state_dict(self, states):
        for s, state in zip(self.samplers, states):
            s.load_state_dict(state)


def one_process_on_the_union(tmp_path, name, data, processes, **values):
    config = TrainConfig(data=data, out_dir=str(tmp_path / name), processes=processes,
                         **values)
    trainer = Trainer(config, log=lambda line: None)
    trainer.sampler = UnionSampler(trainer, 2, values["batch_size"] // 2)
    trainer.run()
    return checkpoint(tmp_path / name / "ckpt.npz")[0], trainer


def test_two_ranks_train_as_one_process_on_the_union_of_their_batches(tmp_path):
    data = corpus(tmp_path)
    steps = dict(max_iters=6, eval_interval=3, log_interval=1, dtype="float64", dropout=0.0,
                 gradient_accumulation_steps=2, n_layer=1, n_head=2, n_embd=16, block_size=16,
                 eval_iters=3, warmup_iters=2, learning_rate=3e-3)
    flags = [f"--{k}={v}" for k, v in steps.items()]
    run = train(tmp_path, 2, "--data", data, "--out_dir", "mpi", "--batch_size", 3, *flags)
    assert run.returncode == 0, run.stderr
    assert "6 rows a step on each" not in run.stdout          # each rank: its own 3 rows
    assert "3 rows a step on each of 2 MPI ranks" in run.stdout
    assert run.stdout.count("step 6:") == 1                   # rank 0 alone logs
    ranks, meta = checkpoint(tmp_path / "mpi" / "ckpt.npz")
    assert meta["world_size"] == 2 and len(meta["ranks"]) == 1

    union, one = one_process_on_the_union(tmp_path, "one", data, 1, batch_size=6, **steps)
    forked, _ = one_process_on_the_union(tmp_path, "fork", data, 2, batch_size=6, **steps)
    assert_close(ranks, union, 1e-10)
    assert_close(ranks, forked, 1e-10)
    # The parameters moved: the runs compared did train.
    start, _ = checkpoint(tmp_path / "mpi" / "ckpt.npz")
    first = one.history[0]["val_loss"]
    assert meta["history"][-1]["val_loss"] < first - 0.1
    # Evaluation, split over the ranks (3 batches: 2 on rank 0, 1 on rank 1), gives the
    # one-process means of the same batches.
    model, _ = load_for_inference(str(tmp_path / "mpi"))
    alone = evaluate(model, {"train": one.train_data, "val": one.val_data}, 16, 3, 3,
                     seed=one.config.seed + 1)
    assert meta["history"][-1]["val_loss"] == pytest.approx(alone["val"], rel=1e-12)
    assert meta["history"][-1]["train_loss"] == pytest.approx(alone["train"], rel=1e-12)


def test_a_stopped_two_rank_run_resumes_bit_for_bit(tmp_path):
    data = corpus(tmp_path)
    # With dropout, so that rank 1's own generator must be saved and restored too.
    common = ["--data", data, *TINY, "--batch_size", "3", "--dropout", "0.1",
              "--eval_interval", "4", "--log_interval", "4"]
    straight = train(tmp_path, 2, "--out_dir", "straight", "--max_iters", 8, *common)
    assert straight.returncode == 0, straight.stderr
    first = train(tmp_path, 2, "--out_dir", "run", "--max_iters", 4, *common)
    assert first.returncode == 0, first.stderr
    second = train(tmp_path, 2, "--out_dir", "run", "--resume", "--max_iters", 8)
    assert second.returncode == 0, second.stderr
    assert "resuming from run/ckpt.npz at iteration 4" in second.stdout
    a, _ = checkpoint(tmp_path / "straight" / "ckpt.npz")
    b, meta = checkpoint(tmp_path / "run" / "ckpt.npz")
    assert meta["iter_num"] == 8
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    # One process resumes the 2-rank run: rank 0's streams go on, rank 1's wait in the
    # checkpoint for a later run with two ranks again.
    alone = Trainer(TrainConfig(out_dir=str(tmp_path / "run"), resume=True, max_iters=10),
                    log=lambda line: None)
    alone.run()
    _, after = checkpoint(tmp_path / "run" / "ckpt.npz")
    assert after["world_size"] == 1 and after["ranks"] == meta["ranks"]


@pytest.mark.parametrize("zero", [0, 1])
def test_an_error_on_one_rank_stops_every_rank_naming_it(tmp_path, zero):
    # Rank 1's batch holds a token id outside the vocabulary at its third step (with ZeRO
    # stage 1 too: its data-parallel object keeps the ranks' status exchange).
    script = tmp_path / "bad_rank.py"
    script.write_text(f"""
import sys
from tinygpt.train import TrainConfig, Trainer, evaluate, load_for_inference
config = TrainConfig(data={corpus(tmp_path)!r}, out_dir="run", n_layer=1, n_head=2,
                     n_embd=16, block_size=16, batch_size=2, max_iters=10, eval_interval=5,
                     eval_iters=2, zero={zero})
trainer = Trainer(config, log=lambda line: None)
calls = [0]
draw = trainer.sampler.get_batch
def get_batch():
    x, y = draw()
    calls[0] += 1
    if trainer.group.rank == 1 and calls[0] == 3:
        x.data[0, 0] = 10 ** 6
    return x, y
trainer.sampler.get_batch = get_batch
try:
    trainer.run()
except ValueError as e:
    # A file per rank: two ranks' lines on one forwarded stdout may interleave.
    with open(f"rank{{trainer.group.rank}}.txt", "w") as f:
        f.write(f"rank {{trainer.group.rank}} at {{trainer.iter_num}}: {{e}}")
    sys.exit(3)
""")
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], cwd=tmp_path,
                         env=env(tmp_path), capture_output=True, text=True, timeout=60)
    lines = sorted(path.read_text() for path in tmp_path.glob("rank*.txt"))
    assert len(lines) == 2, (run.stdout, run.stderr)
    for rank, line in enumerate(lines):
        assert line.startswith(f"rank {rank} at 2: rank 1: token id 1000000"), line
    assert run.returncode == 3


def test_ranks_with_different_settings_or_failing_set_up_are_named(tmp_path):
    data = corpus(tmp_path)
    base = [sys.executable, "-m", "tinygpt", "train", *TINY, "--batch_size", "2",
            "--max_iters", "2", "--out_dir", "run"]
    run = subprocess.run([MPIEXEC, "-n", "1", *base, "--data", data, ":", "-n", "1", *base,
                          "--data", str(tmp_path / "missing.txt")], cwd=tmp_path,
                         env=env(tmp_path), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, run.stderr                         # rank 0 alone reports it
    assert errors[0].startswith("python -m tinygpt train: error: rank 1: ") and "missing.txt" in errors[0]
    assert not (tmp_path / "run" / "ckpt.npz").exists()

    run = subprocess.run([MPIEXEC, "-n", "1", *base, "--data", data, ":", "-n", "1", *base,
                          "--data", data, "--weight_decay", "0.05"], cwd=tmp_path,
                         env=env(tmp_path), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "weight_decay" in errors[0] and "rank 1" in errors[0], (
        run.stderr)


def gone_within(pid, seconds):
    """Whether process `pid` has exited and been reaped within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process_state(pid) is None:
            return True
        time.sleep(0.05)
    return False


def pid_of_rank(lines, rank):
    """The pid rank 0's first line gives for `rank`."""
    head = next(line for line in lines if "MPI ranks" in line)
    return int(head.split(f"rank {rank}: pid ")[1].split()[0])


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_lost_rank_ends_the_run_naming_it(tmp_path, how):
    data = corpus(tmp_path)
    run = start(tmp_path, 2, "--data", data, "--out_dir", "run", *TINY, "--batch_size", 2,
                "--max_iters", 100000, "--eval_interval", 20, "--log_interval", 1,
                TINYGPT_WORKER_TIMEOUT=30)
    try:
        lines = wait_for_line(run, "iter 30/")
        pid = pid_of_rank(lines, 1)
        os.kill(pid, getattr(signal, how))
        out, err, seconds = finish(run, timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    if how == "SIGSTOP":                    # ended, not left stopped (reaped in a moment)
        assert gone_within(pid, 10)
    assert run.returncode != 0
    assert seconds < 20, seconds            # well within the watchdog's 30 s: noticed
    ours = {"SIGKILL": f"rank 1 (pid {pid}) has exited",
            "SIGSTOP": f"rank 1 (pid {pid}) is stopped"}[how]
    if how == "SIGKILL" and f"tinygpt: error: rank 0: {ours}" not in err:
        # MPICH's mpiexec noticed first and ended rank 0 itself: its banner names the
        # process it saw end first, by the pid rank 0's first line maps to a rank.
        assert "BAD TERMINATION" in out and "EXIT CODE: 9" in out, (out[-2000:], err)
        assert any(f"PID {p} RUNNING" in out for p in (pid, pid_of_rank(lines, 0))), out
    else:
        assert f"tinygpt: error: rank 0: {ours}" in err, (out[-2000:], err)
    # The last checkpoint written (iteration 20 or a later one) is whole.
    _, meta = checkpoint(tmp_path / "run" / "ckpt.npz")
    assert meta["iter_num"] >= 20


def test_a_rank_that_never_comes_is_waited_for_at_most_the_timeout(tmp_path):
    script = tmp_path / "late.py"
    script.write_text("""
import time
import numpy as np
from tinygpt.train.distributed import MPIGroup
group = MPIGroup(timeout=1.0)
if group.rank == 1:
    time.sleep(60)
group.all_reduce_(np.zeros(3), what="the test's all-reduce")
""")
    started = time.monotonic()
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], cwd=tmp_path,
                         env=env(tmp_path), capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert run.returncode != 0
    assert ("tinygpt: error: rank 0: the test's all-reduce has waited 1 s for the other ranks"
            in run.stderr), run.stderr


def test_ctrl_c_on_mpiexec_stops_every_rank_with_a_checkpoint(tmp_path):
    data = corpus(tmp_path)
    common = ["--data", data, *TINY, "--batch_size", 2, "--eval_interval", 1000,
              "--log_interval", 1]
    run = start(tmp_path, 2, "--out_dir", "run", "--max_iters", 100000, *common)
    try:
        wait_for_line(run, "iter 20/")
        run.send_signal(signal.SIGINT)
        out, err, seconds = finish(run, timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert seconds < 20
    errors = [line for line in err.splitlines() if line.startswith("python -m tinygpt")]
    assert len(errors) == 1, err                                # rank 0 alone says it
    assert err.count("Ctrl-C: stopping after this iteration") == 1, err
    stopped = checkpoint(tmp_path / "run" / "ckpt.npz")[1]["iter_num"]
    assert f"saved run/ckpt.npz at iteration {stopped}" in errors[0] and stopped > 20
    with open(tmp_path / "run" / "log.jsonl") as f:
        assert max(json.loads(line)["iter"] for line in f) < stopped
    resumed = train(tmp_path, 2, "--out_dir", "run", "--resume", "--max_iters", stopped + 2)
    assert resumed.returncode == 0, resumed.stderr
