"""Helpers for the reliability tests: real `python -m tinygpt` processes on a small corpus,
and what they leave behind."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 40
# A run of a few seconds' work (one layer, 32 channels), on one process unless a test asks
# for more.
TINY = ["--max_iters", "20", "--eval_interval", "10", "--eval_iters", "2", "--n_layer", "1",
        "--n_embd", "32", "--n_head", "2", "--block_size", "16", "--batch_size", "4",
        "--processes", "1"]


def env(tmp_path, **extra):
    """The environment of a child: this checkout first on the path, a private cache."""
    out = dict(os.environ, PYTHONPATH=str(REPO), TINYGPT_CACHE=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1")
    out.pop("TINYGPT_TRACEBACK", None)
    out.update({k: str(v) for k, v in extra.items()})
    return out


def corpus(tmp_path, text=TEXT):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def tinygpt(tmp_path, *args, timeout=120, **extra):
    """Run `python -m tinygpt ARGS` to its end: a CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "tinygpt", *map(str, args)], cwd=tmp_path,
                          env=env(tmp_path, **extra), capture_output=True, text=True,
                          timeout=timeout)


def start(tmp_path, *args, **extra):
    """Start `python -m tinygpt ARGS`; stdout is a pipe (lines), stderr too."""
    return subprocess.Popen([sys.executable, "-m", "tinygpt", *map(str, args)], cwd=tmp_path,
                            env=env(tmp_path, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(process, needle, timeout=60):
    """Read the child's stdout until a line containing `needle`; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no line with {needle!r} from the child; got {lines!r}, "
                         f"stderr {process.stderr.read() if process.poll() is not None else ''}")


def children(pid):
    """The pids of a process's children (Linux)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def processes_mentioning(text):
    """The pids of live processes whose command line contains `text` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def leftovers(folder):
    """Names in `folder` that a finished run should not leave: temporary files and locks."""
    return sorted(name for name in os.listdir(folder)
                  if name.endswith((".tmp", ".part")) or name.endswith(".lock"))
