"""Data parallelism on one machine: training steps split over forked processes against MPI
ranks (`python -m bench parallel`).

For each config (bench/train.py's `small` and `baby`, float32, dropout 0) and one global
batch of B rows per step, four ways, each in a process (or `mpiexec -n N` launch) of its
own, one after another in one run:

    1 process       the whole batch, all the threads
    2 forked        DataParallel: the batch split over 2 processes, gradients summed in
                    shared memory (the trainer's CPU default on Linux)
    1 MPI rank      DistributedDataParallel over a group of one: the same step plus the
                    status exchange and flat-buffer copies, no peer
    2 MPI ranks     B/2 rows on each rank, gradients averaged with one MPI all-reduce

Each step is the trainer's: forward, backward, the gradients reduced, clip to 1.0, AdamW,
zero_grad. Reported: the median ms per step over the timed steps (after warm-up), tokens
per second (B * T / median), and for MPI the median time of the all-reduce alone on a
buffer of the gradients' size (timed separately on the same ranks). The threads of the
machine are shared out among the processes (one each on two cores). Baby steps take
seconds on two cores: `--iters` is small there (3 by default), so its figures are rough.
Imports: numpy, tinygpt, bench/train.py's configs; mpi4py in the MPI launches.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import with_root_on_path
from .train import CONFIGS, gpt_config

WAYS = ("1 process", "2 forked", "1 MPI rank", "2 MPI ranks")
ITERS = {"small": 20, "baby": 3}
WARMUP = {"small": 3, "baby": 1}


def mpiexec():
    """mpiexec beside this Python (the mpich wheel's), else on PATH, else None."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    from shutil import which
    return which("mpiexec")


def steps(config, way, warmup, iters):
    """Run in the worker: time `warmup + iters` training steps; rank 0 returns its row."""
    import tinygpt as tg
    from tinygpt.model import GPT
    from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups
    from tinygpt.train import DataParallel, DistributedDataParallel, init_process_group

    spec = dict(CONFIGS[config], gelu="tanh")
    B, T, V = spec["batch_size"], spec["block_size"], spec["vocab_size"]
    group = init_process_group("mpi" if "MPI" in way else "none")
    tg.manual_seed(0)
    model = GPT(gpt_config(spec, 0.0))
    params = list(model.parameters())
    opt = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-3,
                betas=(0.9, 0.99))
    rows = B // group.world_size

    def local(batches):
        total = 0.0
        for x, y in batches:
            _, loss = model(x, y)
            loss.backward()
            total += loss.item()
        return total / len(batches)

    if way == "2 forked":
        parallel = DataParallel(model, 2)
    elif "MPI" in way:
        parallel = DistributedDataParallel(model, group, local)
    else:
        parallel = None
    rng = np.random.default_rng(group.rank)
    times = []
    for i in range(warmup + iters):
        tokens = rng.integers(0, V, (rows, T + 1))
        batch = (tg.tensor(tokens[:, :-1]), tg.tensor(tokens[:, 1:]))
        start = time.perf_counter()
        if parallel is None:
            local([batch])
        else:
            parallel.forward_backward([batch])
        clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    row = {"ms": 1e3 * float(np.median(times[warmup:])), "ranks": group.world_size}
    if "MPI" in way:
        size = sum(p.data.size for p in params if p.requires_grad)
        buffer = np.ones(size + 1, np.float32)
        reduce_times = []
        for _ in range(5 + max(iters, 5)):
            start = time.perf_counter()
            group.all_reduce_(buffer)
            reduce_times.append(time.perf_counter() - start)
        row["allreduce_ms"] = 1e3 * float(np.median(reduce_times[5:]))
        row["gradient_floats"] = size
    if parallel is not None:
        parallel.close()
    group.close()
    return row if group.rank == 0 else None


def run_way(config, way, warmup, iters, launcher):
    """One way in its own process(es); its row, or {"error": ...}."""
    command = [sys.executable, "-m", "bench", "parallel", "--worker", way,
               "--configs", config, "--warmup", str(warmup), "--iters", str(iters)]
    if "MPI" in way:
        if launcher is None:
            return {"error": "no mpiexec (pip install 'tinygpt[mpi]')"}
        command = [launcher, "-n", way[0]] + command
    done = subprocess.run(command, capture_output=True, text=True,
                          env=with_root_on_path(os.environ))
    rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(rows[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench parallel",
        description="Training steps split over forked processes against MPI ranks.")
    parser.add_argument("--configs", default="small,baby",
                        help=f"comma-separated, of {', '.join(CONFIGS)} (default: small,baby)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed steps per way (default: small 20, baby 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: small 3, baby 1)")
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; expected some of {list(CONFIGS)}")
    if args.worker:
        row = steps(configs[0], args.worker, args.warmup, args.iters)
        if row is not None:
            print(json.dumps(row), flush=True)
        return 0
    launcher = mpiexec()
    print(f"data parallelism on one machine ({os.cpu_count()} cores): each way in its own "
          f"process(es), one global batch per config")
    results = {}
    for config in configs:
        spec = CONFIGS[config]
        iters = args.iters or ITERS.get(config, 5)
        warmup = WARMUP.get(config, 1) if args.warmup is None else args.warmup
        tokens = spec["batch_size"] * spec["block_size"]
        for way in WAYS:
            row = run_way(config, way, warmup, iters, launcher)
            if "ms" in row:
                row["tokens_per_s"] = tokens / (row["ms"] / 1e3)
            results[(config, way)] = row
        print_table(config, spec, iters, warmup, {w: results[(config, w)] for w in WAYS})
    return 0


def print_table(config, spec, iters, warmup, rows):
    print(f"\n{config}: {spec['n_layer']} layers, C {spec['n_embd']}, T {spec['block_size']}, "
          f"B {spec['batch_size']} a step (B/2 on each of 2 ranks or processes); median of "
          f"{iters} steps after {warmup} warm-up")
    print(f"  {'way':<13} {'ms/step':>9} {'tokens/s':>10} {'vs 1 process':>13} "
          f"{'all-reduce ms':>14}")
    base = rows["1 process"].get("ms")
    for way, row in rows.items():
        if "error" in row:
            print(f"  {way:<13} failed: {row['error']}")
            continue
        ratio = f"{base / row['ms']:.2f}x" if base else "-"
        reduce = f"{row['allreduce_ms']:.2f}" if "allreduce_ms" in row else "-"
        print(f"  {way:<13} {row['ms']:>9.1f} {row['tokens_per_s']:>10,.0f} {ratio:>13} "
              f"{reduce:>14}")
    floats = next((r["gradient_floats"] for r in rows.values() if "gradient_floats" in r), None)
    if floats:
        print(f"  (gradients: {floats:,} floats, {4 * floats / 2 ** 20:.1f} MiB in float32)")


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("parallel")
