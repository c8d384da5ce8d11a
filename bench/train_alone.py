"""`python -m bench train`'s runs alone: each framework's training steps in a fresh
process of its own (`rss_child`, run by `run_rss_child`), for its peak RSS and its ms per
step without the other beside it, in rounds of alternating order (`measure_alone`), and
the environment of the processes the benchmark starts (`child_env`).
Imports: numpy, tinygpt, bench (the root, ops' torch import, the runners).
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import tinygpt as tg
from tinygpt.train.parallel import auto_processes

from . import ROOT, with_root_on_path
from .ops import _import_torch
from .train_runners import TinygptRunner, TorchRunner

SPEC_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "vocab_size", "bias")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CHILD_MARK = "TINYGPT_BENCH_TRAIN_CHILD"   # set in the processes this benchmark starts
# The caller's own OpenMP waiting policy, if any (the alternation sets PASSIVE for itself).
_USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
ALONE_SECONDS = 30.0        # time budget of the extra steps a process runs alone
ALONE_MAX_ROUNDS = 12       # rounds of alone processes that --alone-seconds can add up to
ALONE_MIN_TIMED = 3         # timed steps a process runs alone whatever the budget (fewer
                            # only with --iters below it): a median, not one step


def tinygpt_processes(args, spec, threads):
    """(processes, threads of each) for tinygpt at a config: --processes, else
    `auto_processes`, the threads shared out among them."""
    n = args.processes or auto_processes(threads, spec["batch_size"], args.device)
    return n, max(1, threads // n)


def rss_child(framework, spec, args, threads):
    """Build one framework's model in a fresh process and run training steps there alone:
    at least --rss-steps and ALONE_MIN_TIMED timed steps after the first (capped by
    --iters), then more up to --iters while under ALONE_SECONDS. Returns (peak RSS in MB,
    median ms per step after the first, steps in that median), or (None, None, None) on
    failure.

    Alone, PyTorch keeps its default OpenMP waiting (unless the caller set
    OMP_WAIT_POLICY): the same-process alternation needs passive waiting, which slows it.
    """
    cmd = [sys.executable, "-m", "bench", "train", "--_rss-child", framework,
           "--custom", json.dumps({k: spec[k] for k in SPEC_KEYS}),  # --gelu gives "gelu"
           "--threads", str(threads), "--device", args.device,
           "--dropout", str(args.dropout), "--gelu", args.gelu, "--seed", str(args.seed),
           "--rss-steps", str(args.rss_steps), "--iters", str(args.iters),
           "--processes", str(tinygpt_processes(args, spec, threads)[0])]
    env = child_env(threads)
    if _USER_OMP_WAIT_POLICY is None:
        env.pop("OMP_WAIT_POLICY", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("peak_rss_mb "):
        print(f"  peak RSS of {framework} not measured: the subprocess failed "
              f"(exit {done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None, None, None
    fields = lines[-1].split()
    return float(fields[1]), float(fields[3]), int(fields[5])


def run_rss_child(args, spec, threads):
    """The body of an RSS subprocess: prints `peak_rss_mb X` as its last line."""
    if args._rss_child == "torch":
        if _USER_OMP_WAIT_POLICY is None:
            # Alone, nothing competes with PyTorch's OpenMP workers: import it before
            # _import_torch would ask them to wait passively.
            import torch  # noqa: F401
        torch = _import_torch(threads)
        runner = TorchRunner(torch, spec, args.dropout, args.device, args.seed)
    else:
        runner = TinygptRunner(spec, args.dropout, args.device, args.seed,
                               *tinygpt_processes(args, spec, threads))
    rng = np.random.default_rng(args.seed)
    times, start = [], time.perf_counter()
    at_least = max(args.rss_steps, min(ALONE_MIN_TIMED, args.iters) + 1)
    while len(times) < at_least or (
            len(times) < args.iters + 1 and time.perf_counter() - start < ALONE_SECONDS):
        tokens = rng.integers(0, spec["vocab_size"],
                              size=(spec["batch_size"], spec["block_size"] + 1))
        batch = runner.batch(tokens)
        runner.sync()
        t0 = time.perf_counter()
        runner.step(*batch)
        runner.sync()
        times.append(time.perf_counter() - t0)
    alone = times[1:] or times
    rss = runner.peak_rss_mb()
    runner.close()
    print(f"peak_rss_mb {rss:.1f} median_ms {1e3 * float(np.median(alone)):.2f} "
          f"steps {len(alone)}")
    return 0


def measure_alone(spec, args, threads, with_torch):
    """Peak RSS and ms/step of each framework alone in its own process (`rss_child`), in
    rounds whose order alternates (tinygpt, PyTorch; PyTorch, tinygpt; ...): a machine
    whose load drifts then weighs on both alike, and each round's ratio compares two
    processes that ran back to back. At least --alone-rounds rounds, then more two at a
    time while the rounds so far took less than --alone-seconds, up to ALONE_MAX_ROUNDS:
    on this shared machine one round's ratio at small has ranged from 0.85 to 1.69, so a
    config whose processes are short gets more of them. The figures of `alone_results`."""
    frameworks = ["tinygpt", "torch"] if with_torch else ["tinygpt"]
    runs = {fw: [] for fw in frameworks}
    start, i = time.perf_counter(), 0

    def another():
        if i < args.alone_rounds:
            return True
        extra = i - args.alone_rounds               # the extra rounds come in pairs
        return i < ALONE_MAX_ROUNDS and (
            extra % 2 == 1 or time.perf_counter() - start < args.alone_seconds)

    while another():
        for fw in frameworks if i % 2 == 0 else frameworks[::-1]:
            runs[fw].append(rss_child(fw, spec, args, threads))
        i += 1
    return alone_results(runs)


def alone_results(runs):
    """From {framework: [(peak RSS MB, median ms, steps) per round]} (None fields where a
    round failed): for each framework its highest peak RSS, the median of its rounds' ms
    (`<fw>_alone_ms`, each round's in `<fw>_alone_ms_rounds`) and its fewest timed steps in
    a round; `ratio_alone`, the median of the rounds' tinygpt/PyTorch ratios (rounds where
    both ran), each in `ratio_alone_rounds`. None where nothing was measured."""
    row = {}
    for fw in ("tinygpt", "torch"):
        done = [r for r in runs.get(fw, []) if r[1] is not None]
        rss = [r[0] for r in runs.get(fw, []) if r[0] is not None]
        row[f"{fw}_peak_rss_mb"] = max(rss) if rss else None
        row[f"{fw}_alone_ms_rounds"] = [r[1] for r in done]
        row[f"{fw}_alone_ms"] = statistics.median(r[1] for r in done) if done else None
        row[f"{fw}_alone_steps"] = min(r[2] for r in done) if done else None
    pairs = zip(runs.get("tinygpt", []), runs.get("torch", []))
    ratios = [ours[1] / theirs[1] for ours, theirs in pairs if ours[1] and theirs[1]]
    row["ratio_alone_rounds"] = ratios
    row["ratio_alone"] = statistics.median(ratios) if ratios else None
    return row


def child_env(threads):
    """This process's environment with the BLAS thread variables set to `threads`."""
    env = dict(os.environ)
    for name in THREAD_VARS:
        env[name] = str(threads)
    env[CHILD_MARK] = "1"
    # The child must import this tinygpt and this bench, wherever the parent was started from.
    return with_root_on_path(env, Path(tg.__file__).resolve().parents[1], ROOT)
