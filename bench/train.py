"""Training-step benchmark: a full GPT training step, tinygpt beside PyTorch eager
(`python -m bench train`).

One step = forward, cross-entropy loss, backward, `clip_grad_norm_(1.0)`, AdamW step
(lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on the matrices only, as nanoGPT's groups),
`zero_grad`. Configs (float32, vocabulary 65 as Shakespeare's characters):

    small  nanoGPT's CPU recipe:               4 layers, 4 heads, C 128, T 64,  B 12
    baby   nanoGPT's shakespeare_char config:  6 layers, 6 heads, C 384, T 256, B 64

nanoGPT trains them with dropout 0.2; the benchmark uses `--dropout` (0.0 by default) for
both frameworks alike, and GPT-2's tanh GELU (`--gelu tanh`, the default: GPTConfig's) or
the exact one of nanoGPT's nn.GELU() and tinygpt's trainer (`--gelu none`). Token batches
come from one seeded generator and each batch is fed to both frameworks, whose steps
alternate (tinygpt, PyTorch, tinygpt, ...) so that both see the same machine load.
PyTorch starts from tinygpt's initial weights, so both do the same arithmetic on the same
numbers (the first losses are printed side by side).

Reported per config: median ms/step after warm-up with its [min, max], tokens/s, achieved
GFLOP/s (formula below) against a float32 matmul ceiling measured in the same run through
the same BLAS (before and after each config's steps; the higher median counts), the
optimizer step's median and share of the step, the ratio tinygpt/PyTorch of the two
medians and the median of the steps' paired ratios (each step against PyTorch's on the
same batch right after it), and each framework alone in its own subprocess: its peak
resident memory (one process holding both would mix them) and its ms/step, in
rounds of alternating order (--alone-rounds at least, more while under --alone-seconds)
whose ratios' median is the "alone" ratio.
The FLOP count per step, for B sequences of T tokens:

    FLOPs = B * T * (6 * N  +  12 * L * T * C)

  6 * N       the parameter matmuls: 2 FLOPs per multiply-add forward, 4 backward (input
              and weight gradients). N = count_params(non_embedding=True): every block's
              weights and biases, ln_f, and the lm_head's V * C (tied to wte, counted once,
              as a matmul); the wte/wpe lookups do no arithmetic and are not counted.
  12 * L*T*C  attention: per token and layer, q k^T and att @ v each take 2 * T * C FLOPs
              forward (all T keys, the full non-causal count, summed over the heads), so
              4 * T * C forward and 3x that for forward + backward.

This is nanoGPT's `estimate_mfu` count (PaLM, appendix B).

BLAS threads are fixed when NumPy loads: the benchmark runs itself again in a subprocess with
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS set to the chosen count unless they
already hold it, and gives PyTorch and tinygpt's own threads (`set_num_threads`) the same
count. tinygpt trains as `python -m tinygpt train` does: with two threads or more on Linux,
each batch split over two processes (`DataParallel`), the threads shared out among them
(--processes sets the count; 1 gives one process all the threads). Its peak RSS is then
the sum over its processes, each worker's counting the memory it shares with the main
process: an overestimate. Its --profile rows are the main process's ops, on its part of
the batch.
Imports: numpy, tinygpt, the ops benchmark's helpers; torch lazily and optionally. Never
imported by the package.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import tinygpt as tg
from tinygpt.autograd import backend
from tinygpt.autograd.fast import threads as fast_threads
from tinygpt.autograd.ops.fused import GELU_APPROXIMATIONS
from tinygpt.autograd.trace import trace
from tinygpt.model import GPT, GPTConfig
from tinygpt.model.config import PRESETS
from tinygpt.model.sizes import count_params
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups
from tinygpt.train.parallel import DataParallel, auto_processes, check_processes, peak_rss_mb

from . import ROOT, with_root_on_path
from .host import header_lines, host_info
from .ops import _import_torch, _threads
from .torch_gpt import torch_gpt_class

# Shapes: B batch, T sequence (block size), C channels, L layers, V vocabulary.
CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65,
                  bias=True),
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, vocab_size=65,
                 bias=True),
}
SPEC_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "vocab_size", "bias")

LR, BETAS, WEIGHT_DECAY, MAX_NORM = 1e-3, (0.9, 0.99), 0.1, 1.0
DEFAULT_GELU = "tanh"       # GPTConfig's; --gelu none gives the exact one
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CHILD_MARK = "TINYGPT_BENCH_TRAIN_CHILD"   # set in the processes this benchmark starts
FLOP_FORMULA = ("FLOPs/step = B*T * (6*N + 12*L*T*C); N = non-embedding parameters "
                "(blocks, ln_f, the tied lm_head's V*C; not wpe), 12*L*T*C = attention's "
                "q@k^T and att@v at 2*T*C each per token forward (full, non-causal), x3 for "
                "forward+backward")


# The caller's own OpenMP waiting policy, if any (the alternation sets PASSIVE for itself).
_USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
ALONE_SECONDS = 30.0        # time budget of the extra steps a process runs alone
ALONE_MAX_ROUNDS = 12       # rounds of alone processes that --alone-seconds can add up to
ALONE_MIN_TIMED = 3         # timed steps a process runs alone whatever the budget (fewer
                            # only with --iters below it): a median, not one step
PROFILE_ROWS = 16           # rows of each framework's --profile table


def flops_per_step(spec):
    """FLOPs of one training step of `spec` (see the module docstring)."""
    B, T, C, L = spec["batch_size"], spec["block_size"], spec["n_embd"], spec["n_layer"]
    N = count_params(gpt_config(spec, 0.0), non_embedding=True)
    return B * T * (6 * N + 12 * L * T * C)


def gpt_config(spec, dropout):
    """The GPTConfig of a config; its GELU is spec["gelu"] (set from --gelu), else tanh."""
    return GPTConfig(block_size=spec["block_size"], vocab_size=spec["vocab_size"],
                     n_layer=spec["n_layer"], n_head=spec["n_head"], n_embd=spec["n_embd"],
                     dropout=dropout, bias=spec["bias"],
                     gelu_approximate=spec.get("gelu", DEFAULT_GELU))


# --- one framework's training step ----------------------------------------------------------
class Runner:
    """One framework's model and optimizer. `step(idx, targets)` times one training step:
    forward and backward, clipping, the optimizer step, zeroing the gradients; subclasses
    give `forward_backward`, `clip`, `zero_grad`, `sync` and `opt`."""

    def step(self, idx, targets):
        """(step seconds, optimizer-step seconds, loss tensor)."""
        self.sync()
        start = time.perf_counter()
        loss = self.forward_backward(idx, targets)
        self.clip()
        self.sync()
        opt_start = time.perf_counter()
        self.opt.step()
        self.sync()
        opt_end = time.perf_counter()
        self.zero_grad()
        self.sync()
        return time.perf_counter() - start, opt_end - opt_start, loss


class TinygptRunner(Runner):
    """A tinygpt GPT and its AdamW; `step(idx, targets)` runs one timed training step, each
    batch split over `processes` CPU processes (`DataParallel`) when more than one."""

    name = "tinygpt"

    def __init__(self, spec, dropout, device, seed, processes=1, threads=None):
        tg.manual_seed(seed)
        self.device = device
        self.model = GPT(gpt_config(spec, dropout)).to(device)
        self.model.train()
        self.params = list(self.model.parameters())
        self.opt = AdamW(configure_param_groups(self.model.named_parameters(), WEIGHT_DECAY),
                         lr=LR, betas=BETAS)
        self.parallel = DataParallel(self.model, processes, threads) if processes > 1 else None

    def forward_backward(self, idx, targets):
        """Forward and backward of one batch; the loss."""
        if self.parallel is not None:
            return tg.tensor(self.parallel.forward_backward([(idx, targets)]))
        _, loss = self.model(idx, targets)
        loss.backward()
        return loss

    def all_threads(self):
        """Context manager: this process on all its threads (the workers wait meanwhile)."""
        return self.parallel.all_threads() if self.parallel else contextlib.nullcontext()

    def peak_rss_mb(self):
        """Peak RSS of the processes, summed (a worker's counts what it shares with this
        process at the fork: an overestimate)."""
        return sum(self.parallel.peak_rss_mb()) if self.parallel else peak_rss_mb()

    def close(self):
        if self.parallel is not None:
            self.parallel.close()

    def batch(self, tokens):
        """(idx, targets) on the device from a (B, T + 1) NumPy array of token ids."""
        idx = tg.tensor(np.ascontiguousarray(tokens[:, :-1]), device=self.device)
        targets = tg.tensor(np.ascontiguousarray(tokens[:, 1:]), device=self.device)
        return idx, targets

    def sync(self):
        backend.synchronize(self.device)

    def clip(self):
        clip_grad_norm_(self.params, MAX_NORM)

    def zero_grad(self):
        self.opt.zero_grad()

    def state_dict(self):
        return {k: v.numpy() for k, v in self.model.state_dict().items()}


class TorchRunner(Runner):
    """The same step in PyTorch eager: `torch_gpt_class()`, torch.optim.AdamW (for-loop,
    fused=False) with the same groups, torch.nn.utils.clip_grad_norm_."""

    name = "torch"

    def __init__(self, torch, spec, dropout, device, seed, weights=None):
        self.torch = torch
        self.device = "cuda" if device == "cuda" else "cpu"
        torch.manual_seed(seed)
        model = torch_gpt_class()(gpt_config(spec, dropout))
        if weights is not None:                        # start from tinygpt's initial weights
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        self.model = model.to(self.device)
        self.model.train()
        self.params = list(self.model.parameters())
        named = list(self.model.named_parameters())    # the tied weight is listed once
        groups = [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                  {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, fused=False)

    def batch(self, tokens):
        torch = self.torch
        idx = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])).to(self.device)
        targets = torch.from_numpy(np.ascontiguousarray(tokens[:, 1:])).to(self.device)
        return idx, targets

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def forward_backward(self, idx, targets):
        _, loss = self.model(idx, targets)
        loss.backward()
        return loss

    def all_threads(self):
        return contextlib.nullcontext()

    def peak_rss_mb(self):
        return peak_rss_mb()

    def close(self):
        pass

    def clip(self):
        self.torch.nn.utils.clip_grad_norm_(self.params, MAX_NORM)

    def zero_grad(self):
        self.opt.zero_grad(set_to_none=True)


# --- measurements -------------------------------------------------------------------------------
def matmul_ceiling(device, n, repeat=7, torch=None):
    """Median GFLOP/s of an (n, n) @ (n, n) float32 matmul (2 n^3 FLOPs): through the
    device's array module (NumPy's BLAS at this process's thread count, or CuPy's cuBLAS),
    or through PyTorch when `torch` is given (for reference: its BLAS may differ)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if torch is None:
        xp = backend.array_module_for_device(device)
        a, b = backend.to_device(a, device), backend.to_device(b, device)
        out = xp.empty((n, n), dtype=np.float32)

        def sync():
            backend.synchronize(device)

        def matmul():
            xp.matmul(a, b, out=out)
    else:
        torch_device = "cuda" if device == "cuda" else "cpu"
        a, b = torch.from_numpy(a).to(torch_device), torch.from_numpy(b).to(torch_device)
        out = torch.empty((n, n), dtype=torch.float32, device=torch_device)

        def sync():
            if torch_device == "cuda":
                torch.cuda.synchronize()

        def matmul():
            torch.matmul(a, b, out=out)
    matmul()                                            # warm-up: threads, caches
    seconds = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        matmul()
        sync()
        seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(seconds) / 1e9


def time_config(spec, runners, warmup, iters, seed):
    """Alternate the runners' steps on the same batches; per runner the lists of step and
    optimizer seconds after warm-up, and the loss of the first step."""
    rng = np.random.default_rng(seed)
    B, T, V = spec["batch_size"], spec["block_size"], spec["vocab_size"]
    steps = {r.name: [] for r in runners}
    opts = {r.name: [] for r in runners}
    first_loss = {}
    for i in range(warmup + iters):
        tokens = rng.integers(0, V, size=(B, T + 1))
        for runner in runners:
            idx, targets = runner.batch(tokens)
            step_s, opt_s, loss = runner.step(idx, targets)
            if i == 0:
                first_loss[runner.name] = float(loss.item())
            if i >= warmup:
                steps[runner.name].append(step_s)
                opts[runner.name].append(opt_s)
            del loss
    return steps, opts, first_loss


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


# --- generation ---------------------------------------------------------------------------------
def bench_generate(device, preset, new_tokens, prompt_tokens=8, seed=0):
    """Greedy generation tokens/s of a random-weight model of `preset`'s shape, with the KV
    cache (`GPT.generate`) and without it (the whole context through `model(idx)` for each
    new token, keeping only the last position's logits, as nanoGPT's loop)."""
    config = GPTConfig.from_preset(preset)
    tg.manual_seed(seed)
    model = GPT(config).to(device)
    model.eval()
    prompt = np.random.default_rng(seed).integers(0, config.vocab_size, size=(1, prompt_tokens))
    prompt_t = tg.tensor(prompt, device=device)
    model.generate(prompt_t, 2, do_sample=False)           # warm-up

    backend.synchronize(device)
    start = time.perf_counter()
    cached = model.generate(prompt_t, new_tokens, do_sample=False)
    backend.synchronize(device)
    cached_s = time.perf_counter() - start

    xp = backend.array_module_for_device(device)
    tokens = prompt_t.data
    backend.synchronize(device)
    start = time.perf_counter()
    with tg.no_grad():
        for _ in range(new_tokens):
            logits, _ = model(tg.Tensor(tokens[:, -config.block_size:]), last_only=True)
            next_id = xp.argmax(logits.data[:, -1], axis=-1)[:, None]      # (1, 1)
            tokens = xp.concatenate([tokens, next_id.astype(tokens.dtype)], axis=1)
    backend.synchronize(device)
    recompute_s = time.perf_counter() - start

    same = bool(np.array_equal(cached.numpy()[:, prompt_tokens:],
                               backend.to_numpy(tokens)[:, prompt_tokens:]))
    return dict(preset=preset, n_params=count_params(config), prompt_tokens=prompt_tokens,
                new_tokens=new_tokens, kv_cache_tokens_per_s=new_tokens / cached_s,
                no_cache_tokens_per_s=new_tokens / recompute_s,
                speedup=recompute_s / cached_s, same_tokens=same)


# --- the command --------------------------------------------------------------------------------
def child_env(threads):
    """This process's environment with the BLAS thread variables set to `threads`."""
    env = dict(os.environ)
    for name in THREAD_VARS:
        env[name] = str(threads)
    env[CHILD_MARK] = "1"
    # The child must import this tinygpt and this bench, wherever the parent was started from.
    return with_root_on_path(env, Path(tg.__file__).resolve().parents[1], ROOT)


def _ms(seconds):
    return 1e3 * seconds


def paired_ratio(ours, theirs):
    """The median over the timed steps of (tinygpt's step time / PyTorch's on the same
    batch, run right after it): each pair shares the machine's load of its moment, so this
    moves less than the ratio of the two medians when the load drifts during a run."""
    return statistics.median(a / b for a, b in zip(ours, theirs))


def _summary(steps, opts, flops, tokens):
    median = statistics.median(steps)
    opt = statistics.median(opts)
    return dict(ms=_ms(median), spread=[_ms(min(steps)), _ms(max(steps))],
                gflops=flops / median / 1e9, tokens_per_s=tokens / median,
                opt_ms=_ms(opt), opt_share=opt / median)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench train",
        description="Full GPT training steps per second (forward, loss, backward, clip, AdamW), "
                    "tinygpt beside PyTorch eager when installed, float32.")
    parser.add_argument("--configs", default="small,baby",
                        help=f"comma-separated configs from {sorted(CONFIGS)} (default small,baby)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS and PyTorch threads (default: the BLAS thread variables if "
                             "set, else the usable cores)")
    parser.add_argument("--processes", type=int, default=None,
                        help="processes tinygpt splits each batch over, the threads shared "
                             "out among them (default: as `python -m tinygpt train` chooses: "
                             "2 with at least 2 threads on Linux's CPU, else 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout of both models (nanoGPT's recipes use 0.2; default 0.0)")
    parser.add_argument("--gelu", default=DEFAULT_GELU, choices=GELU_APPROXIMATIONS,
                        help="GELU of both models: tanh (GPT-2's, the default) or none "
                             "(exact, erf: nanoGPT's and tinygpt's trainer's)")
    parser.add_argument("--seed", type=int, default=1337, help="weights and token batches")
    parser.add_argument("--profile", action="store_true",
                        help="print where the forward and backward time of a step goes per "
                             "op, tinygpt's and PyTorch's, over --profile-steps more steps")
    parser.add_argument("--profile-steps", type=int, default=5,
                        help="steps --profile traces (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-rss", action="store_true",
                        help="skip the peak-RSS subprocesses")
    parser.add_argument("--rss-steps", type=int, default=2,
                        help="training steps run by each peak-RSS subprocess (default 2)")
    parser.add_argument("--alone-rounds", type=int, default=2,
                        help="fewest rounds of the processes timing each framework alone, in "
                             "alternating order (default 2: tinygpt then PyTorch, then PyTorch "
                             "then tinygpt)")
    parser.add_argument("--alone-seconds", type=float, default=60.0,
                        help="more alone rounds, two at a time, while a config's rounds have "
                             f"taken less than this (default 60; at most {ALONE_MAX_ROUNDS} "
                             "rounds; 0: --alone-rounds only)")
    parser.add_argument("--ceiling-size", type=int, default=None,
                        help="n of the n x n matmul ceiling (default 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--generate", action="store_true",
                        help="also time generation with and without the KV cache")
    parser.add_argument("--gen-tokens", "--gen_tokens", dest="gen_tokens", type=int, default=100,
                        help="new tokens for --generate (default 100)")
    parser.add_argument("--gen-preset", default="gpt2", choices=sorted(PRESETS),
                        help="model shape for --generate (default gpt2: 124M parameters)")
    # Hidden: a config given as JSON (tests use tiny ones), and the RSS subprocess's role.
    parser.add_argument("--custom", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_rss-child", dest="_rss_child", choices=["tinygpt", "torch"],
                        default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.custom is not None:
        try:
            spec = json.loads(args.custom)
        except json.JSONDecodeError as e:
            parser.error(f"--custom: not valid JSON ({e}): {args.custom!r}")
        if not isinstance(spec, dict) or set(spec) != set(SPEC_KEYS):
            parser.error(f"--custom: expected a JSON object with keys {sorted(SPEC_KEYS)}, "
                         f"got {args.custom!r}")
        args.specs = {"custom": spec}
    else:
        names = [s.strip() for s in args.configs.split(",") if s.strip()]
        unknown = [n for n in names if n not in CONFIGS]
        if unknown or not names:
            parser.error(f"--configs: unknown config(s) {unknown}; expected some of "
                         f"{sorted(CONFIGS)}")
        args.specs = {n: CONFIGS[n] for n in names}
    args.specs = {n: dict(spec, gelu=args.gelu) for n, spec in args.specs.items()}
    for name, low in (("iters", 1), ("warmup", 0), ("rss_steps", 1), ("gen_tokens", 1),
                      ("alone_rounds", 1), ("profile_steps", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if not args.alone_seconds >= 0:
        parser.error(f"--alone-seconds must be >= 0, got {args.alone_seconds}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.processes is not None:
        try:
            check_processes(args.processes, args.device)
        except ValueError as e:
            parser.error(f"--processes: {e}")
    if not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.device == "cuda" and not backend.cuda_available():
        parser.error("--device cuda: CuPy or a GPU is not available")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    threads = args.threads or _threads()

    # NumPy's BLAS read its thread count when NumPy loaded: if the variables do not hold the
    # chosen count, run again in a process whose environment has it.
    if any(os.environ.get(name) != str(threads) for name in THREAD_VARS) \
            and not os.environ.get(CHILD_MARK):
        return subprocess.run([sys.executable, "-m", "bench", "train", *argv],
                              env=child_env(threads), check=False).returncode
    fast_threads.set_num_threads(threads)        # tinygpt's own threads: the same count
    if args._rss_child:
        return run_rss_child(args, next(iter(args.specs.values())), threads)

    torch = None if args.no_torch else _import_torch(threads)
    if torch is not None and args.device == "cuda" and not torch.cuda.is_available():
        print("PyTorch: CUDA is not available to it; tinygpt alone")
        torch = None
    ceiling_n = args.ceiling_size or (2048 if args.device == "cpu" else 8192)
    ceiling = matmul_ceiling(args.device, ceiling_n)
    torch_ceiling = matmul_ceiling(args.device, ceiling_n, torch=torch) if torch else None

    host = host_info(torch)
    print("\n".join(header_lines(host)))
    print(f"tinygpt training-step benchmark: float32, device {args.device}, {threads} threads "
          f"({', '.join(f'{v}={os.environ.get(v)}' for v in THREAD_VARS)}), NumPy "
          f"{np.__version__}")
    if torch is not None:
        print(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; steps alternate "
              f"tinygpt, PyTorch, ... on the same batches")
    else:
        print("PyTorch: not measured" + (" (--no-torch)" if args.no_torch else " (not importable)"))
    print(f"step = forward + loss + backward + clip_grad_norm_({MAX_NORM}) + AdamW(lr {LR}, "
          f"betas {BETAS}, weight decay {WEIGHT_DECAY} on matrices) + zero_grad; dropout "
          f"{args.dropout}; GELU {'tanh' if args.gelu == 'tanh' else 'exact (erf)'}; "
          f"median of {args.iters} steps after {args.warmup} warm-up")
    print(FLOP_FORMULA)
    print(f"matmul ceiling: {ceiling:.1f} GFLOP/s ({ceiling_n}x{ceiling_n} float32 @ through "
          f"{'NumPy' if args.device == 'cpu' else 'CuPy'}, median of 7; measured again before "
          f"and after each config's steps)" + (f"; the same matmul in PyTorch: {torch_ceiling:.1f} GFLOP/s"
                             if torch else ""))

    results = {}
    for name, spec in args.specs.items():
        B, T = spec["batch_size"], spec["block_size"]
        flops = flops_per_step(spec)
        print(f"\n[{name}] L={spec['n_layer']} H={spec['n_head']} C={spec['n_embd']} T={T} "
              f"B={B} V={spec['vocab_size']}: {count_params(gpt_config(spec, 0.0)):,} parameters, "
              f"{flops / 1e9:.2f} GFLOP/step", flush=True)
        # The ceiling again, before and after this config's steps, and the higher of the two:
        # the machine's load changes, and one median can fall in a slow spell (a %-of-ceiling
        # above 100 on a shared machine), which would flatter the figure.
        ceiling_before = matmul_ceiling(args.device, ceiling_n)
        processes, each = tinygpt_processes(args, spec, threads)
        if processes > B:
            print(f"--processes {processes}: more than config {name}'s batch of {B} rows",
                  file=sys.stderr)
            return 2
        runners = [TinygptRunner(spec, args.dropout, args.device, args.seed, processes, each)]
        if processes > 1:
            print(f"  tinygpt: each batch split over {processes} processes of {each} "
                  f"thread{'s' if each > 1 else ''} (--processes; `--processes 1`: one "
                  f"process of {threads})", flush=True)
        if torch is not None:
            runners.append(TorchRunner(torch, spec, args.dropout, args.device, args.seed,
                                       weights=runners[0].state_dict()))
        try:
            steps, opts, first_loss = time_config(spec, runners, args.warmup, args.iters,
                                                  args.seed)
            with runners[0].all_threads():
                ceiling_after = matmul_ceiling(args.device, ceiling_n)
            if args.profile:
                profile = profile_steps(runners, spec, args.seed, args.profile_steps)
        finally:
            for runner in runners:
                runner.close()
            del runners
        config_ceiling = max(ceiling_before, ceiling_after)
        print("  first-step loss: " + ", ".join(f"{k} {v:.5f}" for k, v in first_loss.items()))
        ours = _summary(steps["tinygpt"], opts["tinygpt"], flops, B * T)
        theirs = _summary(steps["torch"], opts["torch"], flops, B * T) if torch else None
        row = dict(tinygpt_processes=processes, tinygpt_threads_per_process=each,
                   tinygpt_ms=ours["ms"], tinygpt_ms_spread=ours["spread"],
                   torch_ms=theirs and theirs["ms"], torch_ms_spread=theirs and theirs["spread"],
                   ratio=ours["ms"] / theirs["ms"] if theirs else None,
                   ratio_paired=paired_ratio(steps["tinygpt"], steps["torch"]) if theirs else None,
                   tinygpt_steps_ms=[_ms(x) for x in steps["tinygpt"]],
                   torch_steps_ms=[_ms(x) for x in steps["torch"]] if theirs else None,
                   gflops=ours["gflops"], torch_gflops=theirs and theirs["gflops"],
                   ceiling_gflops=config_ceiling,
                   ceiling_gflops_before_after=[ceiling_before, ceiling_after],
                   flops_per_step=flops,
                   tokens_per_s=ours["tokens_per_s"],
                   torch_tokens_per_s=theirs and theirs["tokens_per_s"],
                   optimizer_ms=ours["opt_ms"], optimizer_share=ours["opt_share"],
                   torch_optimizer_ms=theirs and theirs["opt_ms"],
                   torch_optimizer_share=theirs and theirs["opt_share"],
                   first_loss=first_loss)
        if args.profile:
            ours_rows, torch_rows = profile
            print_profile(ours_rows, torch_rows, args.profile_steps, ours["opt_ms"],
                          ours["opt_share"], args.device, processes)
            row["profile_steps"] = args.profile_steps
            row["profile"] = [list(r) for r in ours_rows]
            row["torch_profile"] = [list(r) for r in torch_rows] if torch else None
        row.update(alone_results({}) if args.no_rss
                   else measure_alone(spec, args, threads, torch is not None))
        results[name] = row
        print(f"  tinygpt {row['tinygpt_ms']:.1f} ms/step" + (
            f", torch {row['torch_ms']:.1f} ms/step, ratio {row['ratio']:.2f}" if theirs else ""),
            flush=True)

    generate = None
    if args.generate:
        print(f"\n[generate] {args.gen_preset}-shaped model, random weights, greedy, prompt 8 "
              f"tokens, {args.gen_tokens} new tokens", flush=True)
        generate = bench_generate(args.device, args.gen_preset, args.gen_tokens)

    print_table(results, generate, ceiling, threads, torch is not None, host)
    if args.json:
        out = dict(threads=threads, device=args.device, host=host, ceiling_gflops=ceiling,
                   torch_ceiling_gflops=torch_ceiling, ceiling_size=ceiling_n,
                   flop_formula=FLOP_FORMULA, gelu=args.gelu, numpy=np.__version__,
                   torch=None if torch is None else torch.__version__, configs=results)
        if generate is not None:
            out["generate"] = generate
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"results written to {args.json}")
    return 0


def print_table(results, generate, ceiling, threads, with_torch, host=None):
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    print("\n" + "\n".join(header_lines(host or host_info())))
    print(f"Results ({threads} threads; ms/step: median [min-max]; % ceil: of the matmul "
          f"ceiling, the higher of its medians before and after the config's steps; matmul ceiling at the start {ceiling:.1f} "
          f"GFLOP/s)")
    header = (f"{'config':<8} {'framework':<9} {'ms/step':>9} {'[min-max]':>19} "
              f"{'tokens/s':>9} {'GFLOP/s':>8} {'ceiling':>8} {'% ceil':>6} {'optim ms':>9} "
              f"{'optim %':>7} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        rows = [("tinygpt", r["tinygpt_ms"], r["tinygpt_ms_spread"], r["tokens_per_s"],
                 r["gflops"], r["optimizer_ms"], r["optimizer_share"], r["tinygpt_peak_rss_mb"])]
        if with_torch:
            rows.append(("torch", r["torch_ms"], r["torch_ms_spread"], r["torch_tokens_per_s"],
                         r["torch_gflops"], r["torch_optimizer_ms"], r["torch_optimizer_share"],
                         r["torch_peak_rss_mb"]))
        config_ceiling = r["ceiling_gflops"]
        for fw, ms, spread, tps, gflops, opt_ms, share, rss in rows:
            spread_text = f"[{spread[0]:.1f}-{spread[1]:.1f}]"
            print(f"{name:<8} {fw:<9} {ms:>9.1f} {spread_text:>19} {tps:>9.0f} {gflops:>8.2f} "
                  f"{config_ceiling:>8.1f} {100 * gflops / config_ceiling:>5.1f}% "
                  f"{opt_ms:>9.2f} {100 * share:>6.1f}% {cell(rss, '.0f'):>11}")
        if with_torch:
            print(f"{name:<8} ratio tinygpt/torch: {r['ratio']:.2f} (below 1: tinygpt is faster; "
                  f"the median of the {len(r['tinygpt_steps_ms'])} steps' paired ratios: "
                  f"{r['ratio_paired']:.2f})")
            if r.get("ratio_alone"):
                rounds = len(r["ratio_alone_rounds"])
                print(f"{name:<8} each alone in its own process (PyTorch's default OpenMP "
                      f"waiting): tinygpt {r['tinygpt_alone_ms']:.1f} ms, torch "
                      f"{r['torch_alone_ms']:.1f} ms, ratio {r['ratio_alone']:.2f} (at least "
                      f"{r['tinygpt_alone_steps']} and {r['torch_alone_steps']} steps a "
                      f"process; " + (f"median of {rounds} rounds in alternating order: "
                                      + ", ".join(f"{x:.2f}" for x in r["ratio_alone_rounds"])
                                      if rounds > 1 else "1 round") + ")")
    if generate is not None:
        g = generate
        print(f"\ngeneration ({g['preset']}, {g['n_params'] / 1e6:.0f}M parameters, "
              f"{g['new_tokens']} new tokens after {g['prompt_tokens']}): "
              f"KV cache {g['kv_cache_tokens_per_s']:.1f} tokens/s, recomputing "
              f"{g['no_cache_tokens_per_s']:.1f} tokens/s, speed-up {g['speedup']:.1f}x "
              f"(same tokens: {'yes' if g['same_tokens'] else 'no'})")


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("train")
