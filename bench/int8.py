"""Benchmark: a trained GPT with float32 weights against the same GPT quantised to int8.

Run as `python -m bench.int8` (from the repository root). It trains the default recipe
(`python -m tinygpt train`'s defaults: 2000 iterations on the default corpus) into
--out_dir, or reuses the checkpoint already there, then measures each of float32 and int8
in a fresh Python process of its own, so that each peak resident memory is its own:

  weights (memory)  bytes of the model's parameters, each tied array once (int8 matrices
                    plus their float32 scales, and the parameters left in float32);
  weights (file)    the size of an .npz of those arrays (`np.savez`; `tinygpt.nn.save_int8`
                    for int8), each tied array once;
  peak RSS          the process's high-water mark after loading, evaluating and generating;
  tokens/s          `generate` of --num_tokens tokens from a one-token prompt, one
                    sequence (the KV cache; past block_size, the window is run again
                    for each token), the median of --repeats runs after one warm-up;
  val loss          the mean loss over --eval_iters batches of the validation split, the
                    same windows for both (`tinygpt.train.evaluate`, one seed).

It also times one product of GPT-2's MLP shape, x (64, 768) @ W^T with W (3072, 768):
float32 BLAS, int8 weights converted to float32 then BLAS (what `Int8Linear` does), and
int8 x int8 with int32 sums in NumPy, which has no int8 BLAS; BLAS on one thread, as
tinygpt's kernels run it.

Imports: the standard library, numpy and tinygpt.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import ROOT, with_root_on_path

MODES = ("float32", "int8")

_CHILD = r"""
import json, os, statistics, sys, tempfile, time
import numpy as np
import tinygpt as tg
from tinygpt.memory import peak_rss_mb
from tinygpt.nn.quantize import save_int8, weight_bytes
from tinygpt.train import evaluate, load_for_inference
from bench.int8 import split_run_text

args = json.loads(sys.argv[1])
model, tokenizer = load_for_inference(args["out_dir"])
if args["mode"] == "int8":
    model.quantize("int8")
memory = weight_bytes(model)
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "weights.npz")
    if args["mode"] == "int8":
        size = save_int8(model, path)
    else:
        seen, arrays = set(), {}
        for name, value in model.state_dict().items():
            if id(value.data) not in seen:
                seen.add(id(value.data))
                arrays[name] = value.numpy()
        np.savez(path, **arrays)
        size = os.path.getsize(path)
splits = split_run_text(args["config"], tokenizer)      # the checkpoint is read once
loss = evaluate(model, {"val": splits["val"]}, model.config.block_size,
                args["config"].get("batch_size", 12), args["eval_iters"], seed=0)["val"]
prompt = tg.tensor(splits["val"][None, :1], dtype="int64")    # one token of the text
times = []
for i in range(args["repeats"] + 1):
    start = time.perf_counter()
    model.generate(prompt, args["num_tokens"], seed=i)
    if i:
        times.append(time.perf_counter() - start)
print(json.dumps({"weight_bytes": memory, "file_bytes": size, "val_loss": loss,
                  "tokens_per_s": args["num_tokens"] / statistics.median(times),
                  "peak_rss_mb": peak_rss_mb()}))
"""


def run_config(out_dir):
    """The saved run's training settings (a dict)."""
    from tinygpt.model.checkpoint import load_training_state
    state = load_training_state(os.path.join(out_dir, "ckpt.npz"))
    return state.meta.get("train_config") or {}


def run_splits(out_dir, tokenizer):
    """({"train": ids, "val": ids}, the run's settings): the run's text, split as the
    trainer splits it."""
    config = run_config(out_dir)
    return split_run_text(config, tokenizer), config


def split_run_text(config, tokenizer):
    """{"train": ids, "val": ids}: the text of a run's settings `config`, split as the
    trainer splits it."""
    from tinygpt.data import load_text, train_val_split
    ids = np.asarray(tokenizer.encode(load_text(config.get("data", "default"))), dtype=np.int64)
    train, val = train_val_split(ids, 0.9)
    return {"train": train, "val": val}


def ensure_run(out_dir, max_iters=None, log=print):
    """Train the default recipe into out_dir unless out_dir/ckpt.npz exists."""
    if os.path.exists(os.path.join(out_dir, "ckpt.npz")):
        log(f"reusing the run in {out_dir}")
        return
    from tinygpt.train import train
    overrides = {} if max_iters is None else {"max_iters": max_iters}
    log(f"training the default recipe into {out_dir} ...")
    start = time.perf_counter()
    train(out_dir=out_dir, log=lambda line: None, **overrides)
    log(f"trained in {time.perf_counter() - start:.0f} s")


def run_child(settings):
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(settings)],
                          capture_output=True, text=True, env=with_root_on_path(os.environ),
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the {settings['mode']} process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_products(repeats=5, rows=64, out_features=3072, in_features=768):
    """Median seconds of x @ W^T three ways (see the module docstring)."""
    from tinygpt.autograd.fast.blas import single_threaded_blas
    from tinygpt.nn.quantize import quantize_per_channel

    from .timing import median_seconds
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, in_features)).astype(np.float32)
    w = (rng.standard_normal((out_features, in_features)) * 0.02).astype(np.float32)
    q, scale = quantize_per_channel(w)
    xq, xscale = quantize_per_channel(x)
    x32, q32 = xq.astype(np.int32), q.astype(np.int32)

    def median(fn):
        return median_seconds(fn, repeats)

    # BLAS on one thread, as tinygpt's kernels run it (NumPy's integer product has one).
    with single_threaded_blas():
        return {
            "float32 BLAS": median(lambda: x @ w.T),
            "int8 -> float32, BLAS": median(lambda: (x @ q.astype(np.float32).T) * scale),
            "int8 x int8, int32 sums": median(
                lambda: (x32 @ q32.T) * xscale[:, None] * scale),
        }


def table(results):
    f, q = results["float32"], results["int8"]
    rows = [("weights in memory (MB)", f["weight_bytes"] / 1e6, q["weight_bytes"] / 1e6,
             "{:.3f}"),
            ("weights on disk, .npz (MB)", f["file_bytes"] / 1e6, q["file_bytes"] / 1e6,
             "{:.3f}"),
            ("peak RSS (MB)", f["peak_rss_mb"], q["peak_rss_mb"], "{:.1f}"),
            ("generation (tokens/s)", f["tokens_per_s"], q["tokens_per_s"], "{:.0f}"),
            ("validation loss", f["val_loss"], q["val_loss"], "{:.4f}")]
    lines = ["| | float32 | int8 | int8 / float32 |", "| --- | --- | --- | --- |"]
    for name, a, b, fmt in rows:
        ratio = f"{b - a:+.4f}" if name == "validation loss" else f"{b / a:.2f}x"
        lines.append(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.split(
        "\n")[0], allow_abbrev=False)
    parser.add_argument("--out_dir", default="out", help="the run to reuse or train (ckpt.npz)")
    parser.add_argument("--max_iters", type=int, default=None,
                        help="iterations when training (default: the recipe's 2000)")
    parser.add_argument("--eval_iters", type=int, default=100)
    parser.add_argument("--num_tokens", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    for name in ("eval_iters", "num_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    ensure_run(args.out_dir, args.max_iters)
    results, config = {}, run_config(args.out_dir)
    for mode in MODES:
        results[mode] = run_child({"mode": mode, "out_dir": os.path.abspath(args.out_dir),
                                   "config": config,
                                   "eval_iters": args.eval_iters,
                                   "num_tokens": args.num_tokens, "repeats": args.repeats})
    print(table(results))
    products = time_products(repeats=max(3, args.repeats))
    print(f"\nx (64, 768) @ W^T, W (3072, 768), median of {max(3, args.repeats)}:")
    base = products["float32 BLAS"]
    for name, seconds in products.items():
        print(f"  {name:26s} {seconds * 1e3:8.2f} ms  ({seconds / base:.1f}x float32)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "products": products}, f, indent=1)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("int8")
