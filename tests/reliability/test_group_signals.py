"""SIGTERM to a training run's whole process group (what `timeout` and `kill -- -PGID`
send) is an interruption of the trainer, also when data-parallel workers share the group:
the run exits 143 saying "interrupted", its checkpoint saved, no process left behind."""

import os
import signal
import subprocess
import sys

import pytest

from runs import TINY, corpus, env, leftovers, processes_mentioning, wait_for_line

from tinygpt.model.checkpoint import load_training_state

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "fork"),
                                reason="Linux: /proc, fork")


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_to_the_group_saves_and_exits_143(tmp_path, processes):
    marker = f"sigterm-group-{processes}"
    args = ["train", "--data", corpus(tmp_path), "--out_dir", marker, *TINY,
            "--max_iters", "100000", "--eval_interval", "50", "--log_interval", "1",
            "--processes", str(processes)]
    child = subprocess.Popen([sys.executable, "-m", "tinygpt", *args], cwd=tmp_path,
                             env=env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_line(child, "iter 3")
        os.killpg(child.pid, signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "has exited" not in err, err
    state = load_training_state(tmp_path / marker / "ckpt.npz")
    assert int(state.meta["iter_num"]) > 3
    assert leftovers(tmp_path / marker) == []
    assert processes_mentioning(marker) == []
