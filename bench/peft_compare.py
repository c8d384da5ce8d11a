"""`python -m bench.peft_compare`: full fine-tuning against LoRA against bottleneck
adapters, on one small multiple-choice task, from one pre-trained GPT.

1. The task (2-way multiple choice, built here from the text): a held-out line of the
   text against the same line with the inner letters of three of its words (of 4+
   letters) shuffled, first and last letters kept; the line before it is the story. Both
   candidates have the same characters, so only a model that knows the words tells them
   apart. The splits come from the last 20% of the lines, by a seed, leaving out any line
   that also occurs in the first 80%.
2. The base: a character GPT pre-trained (`tinygpt.train`) on the first 80% of the lines,
   so no task line is seen in pre-training.
3. Three fine-tunings of that base with `python -m tinygpt finetune`'s code, GPT-1's
   recipe (head at the classify token, L3 = L2 + lm_coef L1), each in a subprocess of its
   own so that its peak memory is its own: every parameter ("full"), LoRA on every
   projection of the blocks (rank r: 16 C r per block), bottleneck adapters after each
   attention and MLP (width m: 4 C m + 2 m + 2 C per block; m = 4 r gives about LoRA's
   count). The head (C + 1) is trained in all three; each method has its own learning
   rate (the flags).
4. The table: test accuracy (with its standard error), trained parameters, the median
   time of a training step, the peak resident memory of the subprocess.

The text is tiny Shakespeare from ../shared/data when that file exists, else the
embedded corpus (--data overrides). `--out FOLDER` keeps the runs; a second run into the
same folder reuses its pre-trained GPT (e.g. `--methods bottleneck --lr_bottleneck 1e-2`).
Timings on a shared machine are inflated; compare the rows of one run. Imports: tinygpt.
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import ROOT, with_root_on_path

SHARED_TEXT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "tinyshakespeare.txt"
METHODS = ("full", "lora", "bottleneck")


def scramble(line, rng, words=3, min_length=4):
    """`line` with the inner letters of `words` of its words of min_length+ letters
    shuffled (first and last letters kept, the result differing from the word); None when
    the line has too few such words."""
    spans = [m.span() for m in re.finditer(r"[A-Za-z]+", line) if m.end() - m.start()
             >= min_length and len(set(line[m.start() + 1:m.end() - 1])) > 1]
    if len(spans) < words:
        return None
    out = list(line)
    for i in rng.choice(len(spans), words, replace=False):
        start, end = spans[i]
        inner = out[start + 1:end - 1]
        shuffled = inner
        while shuffled == inner:
            shuffled = list(rng.permutation(inner))
        out[start + 1:end - 1] = shuffled
    return "".join(out)


def make_task(text, sizes, seed):
    """(ClozeTask, pre-training text): the task from the last 20% of the lines (each line
    with the one before it as its story), the pre-training text the first 80%."""
    from tinygpt.data.cloze import ClozeExample, ClozeTask
    lines = text.split("\n")
    cut = int(0.8 * len(lines))
    pretrain = "\n".join(lines[:cut]) + "\n"
    known, seen = set(pretrain), set(lines[:cut])
    rng = np.random.default_rng(seed)
    # A task line never occurs in the pre-training text, nor does a character it lacks.
    pairs = [(lines[i - 1], lines[i]) for i in range(cut + 1, len(lines))
             if lines[i - 1].strip() and len(lines[i]) >= 20 and lines[i] not in seen
             and set(lines[i - 1] + lines[i]) <= known]
    examples = []
    for j in rng.permutation(len(pairs)):
        story, line = pairs[j]
        wrong = scramble(line, rng)
        if wrong is None:
            continue
        label = int(rng.integers(2))
        endings = [wrong, wrong]
        endings[label] = line
        examples.append(ClozeExample(story + "\n", endings, label))
        if len(examples) == sum(sizes):
            break
    if len(examples) < sum(sizes):
        raise ValueError(f"the text gives {len(examples)} examples, fewer than the "
                         f"{sum(sizes)} asked for: use a longer text or fewer --examples")
    a, b = sizes[0], sizes[0] + sizes[1]
    task = ClozeTask(examples[:a], examples[a:b], examples[b:], pretrain_text=pretrain,
                     info={"task": "scrambled words", "seed": seed})
    return task, pretrain


def pretrain(text, folder, args):
    """A char GPT trained on `text` into `folder` (a `tinygpt train` out_dir)."""
    from tinygpt.train import TrainConfig, Trainer
    path = Path(folder) / "pretrain.txt"
    path.write_text(text, encoding="utf-8")
    config = TrainConfig(out_dir=str(Path(folder) / "base"), data=str(path),
                         block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                         n_embd=args.n_embd, batch_size=12, max_iters=args.pretrain_iters,
                         lr_decay_iters=args.pretrain_iters,
                         warmup_iters=min(100, args.pretrain_iters // 10),
                         eval_interval=args.pretrain_iters, eval_iters=10,
                         log_interval=args.pretrain_iters, seed=args.seed)
    history = Trainer(config, log=lambda line: None).run()
    return history[-1]["val_loss"] if history else float("nan")


def worker(spec):
    """One fine-tuning (in its own process): prints one JSON line with its figures."""
    from tinygpt.memory import peak_rss_mb
    from tinygpt.train.finetune import FinetuneConfig, finetune
    times = []

    def log(line):
        match = re.search(r"step \d+/\d+: .* (\d+) ms/step", line)
        if match:
            times.append(float(match.group(1)))
    options = {"full": {}, "lora": {"lora_rank": spec["lora_rank"]},
               "bottleneck": {"adapter_size": spec["adapter_size"]}}[spec["method"]]
    results = finetune(FinetuneConfig(
        task=spec["task"], out_dir=spec["out_dir"], init_from=spec["init_from"],
        learning_rate=spec["lr"], epochs=spec["epochs"], batch_size=spec["batch_size"],
        lm_coef=spec["lm_coef"], log_interval=1, seed=spec["seed"], overwrite=True, **options),
        log=log)
    print(json.dumps({"method": spec["method"], "test_accuracy": results["test_accuracy"],
                      "val_accuracy": results["val_accuracy"],
                      "test_examples": results["test_examples"],
                      "trainable": results["trainable_parameters"],
                      "step_ms": statistics.median(times[1:] or times),
                      "peak_mb": peak_rss_mb(), "seconds": results["seconds"]}))


def run_method(method, folder, args):
    """Run `worker` for `method` in a subprocess; returns its JSON figures."""
    lr = {"full": args.lr_full, "lora": args.lr_lora, "bottleneck": args.lr_bottleneck}[method]
    spec = {"method": method, "task": str(Path(folder) / "task"),
            "out_dir": str(Path(folder) / method), "init_from": str(Path(folder) / "base"),
            "lr": lr, "epochs": args.epochs, "batch_size": args.batch_size,
            "lm_coef": args.lm_coef, "seed": args.seed, "lora_rank": args.lora_rank,
            "adapter_size": args.adapter_size}
    env = with_root_on_path(os.environ)
    done = subprocess.run([sys.executable, "-m", "bench.peft_compare", "--worker",
                           json.dumps(spec)], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the {method} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows, args):
    lines = ["| method | test accuracy | trained parameters | step (ms, median) | "
             "peak memory (MB) | run (s) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        acc, n = r["test_accuracy"], r["test_examples"]
        se = math.sqrt(acc * (1 - acc) / n)
        name = {"full": "full fine-tuning", "lora": f"LoRA rank {args.lora_rank}",
                "bottleneck": f"bottleneck adapters m={args.adapter_size}"}[r["method"]]
        lines.append(f"| {name} | {100 * acc:.1f}% ± {100 * se:.1f} | {r['trainable']:,} | "
                     f"{r['step_ms']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.peft_compare", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_TEXT) if SHARED_TEXT.is_file() else "default")
    p.add_argument("--examples", type=int, nargs=3, default=[1000, 200, 600],
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--pretrain_iters", type=int, default=400)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lm_coef", type=float, default=0.5)
    p.add_argument("--lora_rank", type=int, default=4)
    p.add_argument("--adapter_size", type=int, default=16)
    p.add_argument("--lr_full", type=float, default=2.5e-4)
    p.add_argument("--lr_lora", type=float, default=2e-3)
    p.add_argument("--lr_bottleneck", type=float, default=1e-2)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="a folder to keep the runs in (default: a "
                   "temporary one); a pre-trained GPT already there (base/) is reused")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    """Run the comparison (module docstring); returns the rows of the table (dicts)."""
    args = parse(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return []
    from tinygpt.data import load_text
    from tinygpt.data.cloze import save_task
    folder = args.out or tempfile.mkdtemp(prefix="tinygpt-peft-")
    os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    task, text = make_task(load_text(args.data), args.examples, args.seed)
    save_task(task, Path(folder) / "task", overwrite=True)
    print(f"task: {' / '.join(str(len(s)) for s in (task.train, task.val, task.test))} "
          f"examples (2 choices: a line against it with three words' letters shuffled)",
          flush=True)
    if (Path(folder) / "base" / "ckpt.npz").is_file():
        print(f"reusing the pre-trained GPT in {Path(folder) / 'base'}", flush=True)
    else:
        val = pretrain(text, folder, args)
        print(f"pre-trained {args.n_layer} layers x {args.n_embd} channels, block "
              f"{args.block_size}, {args.pretrain_iters} iterations: val loss {val:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    rows = []
    for method in args.methods:
        rows.append(run_method(method, folder, args))
        print(f"  {method}: {json.dumps(rows[-1])}", flush=True)
    print()
    print(table(rows, args))
    print(f"\n{time.perf_counter() - start:.0f} s in all; runs kept in {folder}")
    return rows


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("peft_compare")
