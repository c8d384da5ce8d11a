"""`python -m bench train --profile`: where a step's time goes, op by op, tinygpt's under
`trace` and PyTorch's under torch.profiler, printed as two tables.
Imports: numpy, tinygpt's trace, the standard library; torch through the runner given it.
"""

import contextlib
import os
import sys

import numpy as np

from tinygpt.autograd.trace import trace

PROFILE_ROWS = 16           # rows of each framework's --profile table


def profile_steps(runners, spec, seed, steps):
    """Forward and backward of `steps` more batches, each framework in turn as in the timed
    run: tinygpt's under `trace`, PyTorch's under one torch.profiler session around the
    whole loop (it records PyTorch's ops only; tinygpt's steps add nothing to it). Returns
    tinygpt's rows [(op, direction, calls, seconds)] and PyTorch's [(op, calls, self
    seconds: CPU time on the CPU, device time on CUDA)], both per step, largest first
    (PyTorch's empty without it). The optimizer is not profiled: its time is the table's
    "optim ms"."""
    rng = np.random.default_rng(seed + 1)
    batches = [[runner.batch(tokens) for runner in runners]     # made before the profiling
               for tokens in (rng.integers(0, spec["vocab_size"], size=(
                   spec["batch_size"], spec["block_size"] + 1)) for _ in range(steps))]
    ours, theirs = trace(synchronize=runners[0].device == "cuda"), None
    torch_runner = next((r for r in runners if r.name != "tinygpt"), None)
    if torch_runner is not None:
        profiler = torch_runner.torch.profiler
        theirs = profiler.profile(activities=[profiler.ProfilerActivity.CPU] + (
            [profiler.ProfilerActivity.CUDA] if torch_runner.device == "cuda" else []))
        with _quiet_stderr():               # its start and stop print a line each there
            theirs.start()
    try:
        for step_batches in batches:
            for runner, (idx, targets) in zip(runners, step_batches):
                with ours if runner.name == "tinygpt" else contextlib.nullcontext():
                    runner.forward_backward(idx, targets)
                    runner.sync()
                runner.zero_grad()
    finally:
        if theirs is not None:
            with _quiet_stderr():
                theirs.stop()
    totals = {}
    for event in theirs.key_averages() if theirs is not None else []:
        totals[event.key] = (event.count, event.self_device_time_total
                             if torch_runner.device == "cuda" else event.self_cpu_time_total)
    tinygpt_rows = [(op, d, calls / steps, sec / steps)
                    for (op, d), (calls, sec) in ours.summary().items()]
    torch_rows = sorted(((op, calls / steps, 1e-6 * us / steps)
                         for op, (calls, us) in totals.items()), key=lambda r: -r[2])
    return tinygpt_rows, torch_rows


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null for the block: torch.profiler's start and stop
    write there from C++ (its library's log lines), past Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def print_profile(tinygpt_rows, torch_rows, steps, opt_ms, opt_share, device, processes=1,
                  limit=PROFILE_ROWS):
    """tinygpt's rows and PyTorch's, one table after the other, per step."""
    print(f"  profile, per step over {steps} more steps (forward + backward ops; the "
          f"optimizer step, not profiled: {opt_ms:.1f} ms, {100 * opt_share:.1f}% of the "
          f"step):")
    _print_op_rows("tinygpt", "ms in ops; `trace`" + (
                       f"; the main process, its part of the batch split over {processes}"
                       if processes > 1 else ""),
                   [(f"{op:<16} {d:<9}", calls, sec) for op, d, calls, sec in tinygpt_rows],
                   f"{'op':<16} {'direction':<9}", limit)
    if torch_rows:
        kind = "device" if device == "cuda" else "CPU"
        width = max(len(r[0]) for r in torch_rows[:limit])
        _print_op_rows("PyTorch", f"ms self {kind} time; torch.profiler",
                       [(f"{op:<{width}}", calls, sec) for op, calls, sec in torch_rows],
                       f"{'op':<{width}}", limit)


def _print_op_rows(framework, what, rows, head, limit):
    """rows [(label, calls, seconds)], the first `limit` of them with their share of all."""
    total = sum(sec for _, _, sec in rows)
    print(f"    {framework} ({1e3 * total:.2f} {what}):")
    print(f"      {head} {'calls':>6} {'ms':>8} {'share':>6}")
    for label, calls, sec in rows[:limit]:
        print(f"      {label} {calls:>6.0f} {1e3 * sec:>8.2f} "
              f"{100 * sec / total if total else 0:>5.1f}%")
