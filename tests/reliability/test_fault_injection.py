"""Fault injection: `kill -9` the trainer at random (seeded) moments over many short runs,
resuming after each kill as a user would, then check that every checkpoint left behind
loads, that the last run ends on the uninterrupted run's weights bit for bit, and that no
temporary file, lock or process is left behind.

A moment is a random iteration or evaluation (the trainer prints a line for each) plus a
random few milliseconds, so kills land in steps, evaluations and saves; or, now and then,
a random time during start-up."""

import os
import signal
import sys
import time

import numpy as np
import pytest

from runs import corpus, leftovers, processes_mentioning, start, tinygpt

from tinygpt.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "fork"),
                                reason="Linux: /proc, fork")

# A checkpoint every other iteration, so kills land before, during and after saves. The
# model is tiny (a step takes a millisecond or two on a quiet machine), so the run is long
# enough that twelve kills land before it ends, however fast start-up and steps are.
RUN = ["--max_iters", "600", "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1",
       "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--block_size", "16",
       "--batch_size", "4", "--dropout", "0.1"]
KILLS = 12                  # per series; then the run is let finish


def gone(marker, seconds=10):
    """True once no process mentioning `marker` is left (orphaned workers end on EOF)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes_mentioning(marker):
            return True
        time.sleep(0.05)
    return False


def arrays(path):
    """The parameters and the optimizer's moments in a checkpoint."""
    return load_checkpoint(path)[0]


@pytest.mark.parametrize("processes", [1, 2])
def test_kill_9_at_random_moments_then_resume_reaches_the_same_weights(tmp_path, processes):
    rng = np.random.default_rng(20 + processes)
    data = corpus(tmp_path)
    common = ["--data", data, "--processes", str(processes), *RUN]
    reference = tinygpt(tmp_path, "train", "--out_dir", "straight", *common)
    assert reference.returncode == 0, reference.stderr
    expected = arrays(tmp_path / "straight" / "ckpt.npz")

    run = tmp_path / "killed"
    kills = resumes = iteration = 0
    while True:
        if (run / "ckpt.npz").exists():
            args, resumes = ["--out_dir", "killed", "--resume"], resumes + 1
        else:                       # killed before its first checkpoint: start it again
            args = ["--out_dir", "killed", "--overwrite", *common]
        child = start(tmp_path, "train", *args)
        if kills < KILLS:
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.3))           # during start-up
            else:
                # A training iteration, or an evaluation (whose checkpoint is written next).
                at = iteration + rng.integers(0, 6)
                target = f"iter {at}/" if rng.random() < 0.5 else f"step {at + at % 2}:"
                for line in child.stdout:
                    if line.startswith(target):
                        break
                time.sleep(rng.uniform(0.0, 0.004))
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                kills += 1
        out, err = child.communicate(timeout=120)
        assert child.returncode in (0, -signal.SIGKILL), err
        assert gone(str(run)), "a worker outlived its trainer"
        if (run / "ckpt.npz").exists():          # every checkpoint loads
            iteration = load_checkpoint(run / "ckpt.npz")[1]["iter_num"]
        if child.returncode == 0:
            break
    assert kills == KILLS and resumes >= 3
    got = arrays(run / "ckpt.npz")
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[k], expected[k]) for k in got), \
        [k for k in got if not np.array_equal(got[k], expected[k])]
    assert leftovers(run) == []
    assert sorted(os.listdir(run)) == ["ckpt.npz", "log.jsonl"]
