"""Helpers for the tests of MPI runs: `mpiexec -n N python -m tinygpt train ...` (or a
script) as real subprocesses on localhost, with time limits, and a skip where mpi4py or
mpiexec is missing (`pip install -e ".[mpi]"` brings both)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygpt.model.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "reliability"))
from runs import wait_for_line  # noqa: E402,F401 - the reliability tests' helper
TEXT = "the quick brown fox jumps over the lazy dog; " * 60
# One layer, 16 channels: each step takes milliseconds, so a run's time is mostly start-up.
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
        "--eval_iters", "4", "--warmup_iters", "2", "--learning_rate", "3e-3"]


def find_mpiexec():
    """mpiexec beside this Python (where the mpich wheel installs it), else on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None
    or not sys.platform.startswith("linux"),
    reason="needs mpi4py and mpiexec (pip install -e '.[mpi]'), on Linux")


def env(tmp_path, **extra):
    """A child's environment: this checkout first on the path, no inherited MPI rank."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL"))}
    out.update(PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [
        os.environ.get("PYTHONPATH")] if p]), TINYGPT_CACHE=str(tmp_path / "cache"),
        PYTHONUNBUFFERED="1")
    out.pop("TINYGPT_TRACEBACK", None)
    out.update({k: str(v) for k, v in extra.items()})
    return out


def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def command(ranks, *args, mpiexec_args=()):
    return [MPIEXEC, *mpiexec_args, "-n", str(ranks), sys.executable, "-m", "tinygpt",
            "train", *map(str, args)]


def train(tmp_path, ranks, *args, timeout=120, mpiexec_args=(), **extra):
    """Run `mpiexec -n ranks python -m tinygpt train ARGS` to its end (a CompletedProcess)."""
    return subprocess.run(command(ranks, *args, mpiexec_args=mpiexec_args), cwd=tmp_path,
                          env=env(tmp_path, **extra), capture_output=True, text=True,
                          timeout=timeout)


def start(tmp_path, ranks, *args, mpiexec_args=(), **extra):
    """Start `mpiexec ... train ARGS`, stdout and stderr as pipes (text)."""
    return subprocess.Popen(command(ranks, *args, mpiexec_args=mpiexec_args), cwd=tmp_path,
                            env=env(tmp_path, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout):
    """(stdout, stderr, seconds) of a started run waited for up to `timeout` seconds."""
    started = time.monotonic()
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return out, err, time.monotonic() - started


def checkpoint(path):
    """(parameters by name, meta) of a checkpoint."""
    arrays, meta = load_checkpoint(path)
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}, meta


def assert_close(a, b, tol):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)
