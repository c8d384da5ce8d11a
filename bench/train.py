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
Imports: numpy, tinygpt, the ops benchmark's helpers and the train_* modules beside this one
(runners, profile, alone runs); torch lazily and optionally. Never
imported by the package.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import tinygpt as tg
from tinygpt.autograd import backend
from tinygpt.autograd.fast import threads as fast_threads
from tinygpt.autograd.ops.fused import GELU_APPROXIMATIONS
from tinygpt.model import GPT, GPTConfig
from tinygpt.model.config import PRESETS
from tinygpt.model.sizes import count_params
from tinygpt.train.parallel import check_processes

from .host import header_lines, host_info
from .ops import _import_torch, _threads
from .train_profile import print_profile, profile_steps
from .train_alone import (ALONE_MAX_ROUNDS, CHILD_MARK, SPEC_KEYS, THREAD_VARS, alone_results,
                          child_env, measure_alone, run_rss_child, tinygpt_processes)
from .train_runners import (BETAS, DEFAULT_GELU, LR, MAX_NORM, WEIGHT_DECAY, TinygptRunner,
                            TorchRunner, flops_per_step, gpt_config)

# Shapes: B batch, T sequence (block size), C channels, L layers, V vocabulary.
CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65,
                  bias=True),
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, vocab_size=65,
                 bias=True),
}
FLOP_FORMULA = ("FLOPs/step = B*T * (6*N + 12*L*T*C); N = non-embedding parameters "
                "(blocks, ln_f, the tied lm_head's V*C; not wpe), 12*L*T*C = attention's "
                "q@k^T and att@v at 2*T*C each per token forward (full, non-causal), x3 for "
                "forward+backward")



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
