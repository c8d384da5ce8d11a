"""Benchmark: fine-tuning with LoRA against fine-tuning every parameter, at GPT-2's shape.

Run as `python -m bench lora` (or `python -m bench.lora`). It builds a GPT of
the preset's shape (GPT-2 124M by default, random weights: the figures do not depend on
the values) and times training steps (forward, loss, backward, gradient clipping, AdamW)
two ways, each in a fresh Python process of its own so that its peak resident memory is
its own:

  full   every parameter trained (AdamW keeps two moments for each);
  lora   `apply_lora` on the blocks' projections (--targets), the rest frozen: no weight
         gradient is computed for a frozen layer, and the optimizer holds the adapters only.

The processes run in rounds of alternating order (full then lora, lora then full), so a
machine that slows down or speeds up during the run affects both alike. It prints, side by
side, the trainable parameters (count and % of the model), the median step time over all
rounds' timed steps, the peak RSS of the process and, within it, the RSS once the model was
built, and the ratios LoRA / full. Linux only (peak RSS from /proc). `--json` writes the
numbers.

Imports: the standard library and tinygpt (in the child processes).
"""

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np
import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.nn.lora import apply_lora
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

args = json.loads(sys.argv[1])
tg.manual_seed(0)
model = GPT(GPTConfig.from_preset(args["preset"], block_size=args["block_size"]))
if args["mode"] == "lora":
    apply_lora(model, rank=args["rank"], alpha=args["alpha"], targets=tuple(args["targets"]))
model_rss = rss_mb("VmRSS")
optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-4)
rng = np.random.default_rng(0)
V, B, T = model.config.vocab_size, args["batch_size"], args["block_size"]
times = []
for step in range(args["steps"] + 1):               # the first step is not timed
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    start = time.perf_counter()
    _, loss = model(x, y)
    loss.backward()
    clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    if step:
        times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "params": model.num_parameters(),
                  "trainable": model.num_parameters(only_trainable=True),
                  "model_rss_mb": model_rss, "peak_rss_mb": rss_mb("VmHWM")}))
"""

MODES = ("full", "lora")


def run_child(settings):
    """One process's measurements (a dict) for `settings` (mode, preset, sizes, LoRA)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(settings)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {settings['mode']} process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(preset="gpt2", batch_size=1, block_size=128, rank=8, alpha=16.0,
            targets=("c_attn", "c_proj", "c_fc"), steps=4, rounds=2, log=print):
    """{mode: {"times": [...], "params", "trainable", "model_rss_mb": [...],
    "peak_rss_mb": [...]}} over `rounds` rounds of alternating order."""
    results = {mode: {"times": [], "model_rss_mb": [], "peak_rss_mb": []} for mode in MODES}
    for r in range(rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            out = run_child({"mode": mode, "preset": preset, "batch_size": batch_size,
                             "block_size": block_size, "rank": rank, "alpha": alpha,
                             "targets": list(targets), "steps": steps})
            entry = results[mode]
            entry["times"] += out["times"]
            entry["params"], entry["trainable"] = out["params"], out["trainable"]
            entry["model_rss_mb"].append(out["model_rss_mb"])
            entry["peak_rss_mb"].append(out["peak_rss_mb"])
            log(f"round {r + 1} {mode}: {statistics.median(out['times']) * 1e3:.0f} ms/step, "
                f"peak RSS {out['peak_rss_mb']:.0f} MB")
    return results


def table(results, rank, targets):
    """The side-by-side table (markdown) of `measure`'s results."""
    rows = ["| | trainable parameters | % of the model | ms/step (median) | peak RSS MB "
            "(model built) |", "| --- | --- | --- | --- | --- |"]
    names = {"full": "full fine-tuning",
             "lora": f"LoRA r={rank} ({', '.join(targets)})"}
    median = {mode: {key: statistics.median(results[mode][key])
                     for key in ("times", "peak_rss_mb", "model_rss_mb")} for mode in MODES}
    for mode in MODES:
        r, m = results[mode], median[mode]
        rows.append(f"| {names[mode]} | {r['trainable']:,} | "
                    f"{100 * r['trainable'] / r['params']:.2f}% | {m['times'] * 1e3:.0f} | "
                    f"{m['peak_rss_mb']:.0f} ({m['model_rss_mb']:.0f}) |")
    full, lora = median["full"], median["lora"]
    rows.append(f"| LoRA / full | {results['lora']['trainable'] / results['full']['trainable']:.4f}"
                f" | | {lora['times'] / full['times']:.2f} | "
                f"{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench lora",
                                     description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--preset", default="gpt2", help="model shape (default: gpt2, 124M)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--block_size", type=int, default=128,
                        help="tokens per row (default: 128)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="c_attn,c_proj,c_fc",
                        help="comma-separated layer names (default: c_attn,c_proj,c_fc)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of one process per mode, in alternating order")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    for name in ("batch_size", "block_size", "rank", "steps", "rounds"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if not sys.platform.startswith("linux"):
        print("error: this benchmark reads peak RSS from /proc (Linux only)", file=sys.stderr)
        return 2
    targets = tuple(t for t in args.targets.split(",") if t)
    print(f"{args.preset}: batch {args.batch_size} x {args.block_size} tokens, {args.steps} "
          f"timed steps per process, {args.rounds} rounds")
    try:
        results = measure(args.preset, args.batch_size, args.block_size, args.rank,
                          args.alpha, targets, args.steps, args.rounds)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(results, args.rank, targets))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("lora")
