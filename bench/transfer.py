"""Experiment: what generative pre-training buys on an acceptability task (GPT-1's claim).

Run as `python -m bench.transfer` from the repository root. In one command it

1. writes the task (tinygpt.data.acceptability: a real line of tiny Shakespeare against
   the same line with one word's letters scrambled, `--kind misspell`, or another kind,
   2-way multiple choice; `--task DIR` reuses one already written);
2. pre-trains a char GPT on the task's pretrain.txt (the training speeches only: no
   validation or test line), as `python -m tinygpt train --data DIR/pretrain.txt` would
   (`--pretrained DIR` reuses a `tinygpt train` out_dir instead);
3. fine-tunes with GPT-1's recipe (`tinygpt.train.finetune`: the classify-token head,
   L3 = L2 + lambda L1, AdamW, linear warm-up and decay, dropout 0.1) from random
   initialisation (the same shape) and from the pre-trained weights, lambda 0 and 0.5,
   over `--seeds` seeds each (the seed of the head, dropout and batch order; a random
   init's weights too);
4. scores the pre-trained model zero-shot: of the two lines it picks the one with the
   higher total log-likelihood (each line read after a newline, its own newline included);
5. prints a table: test accuracy, mean and standard error over the seeds, for each
   fine-tuning row, the zero-shot row and the majority-class baseline (the training
   split's most common label, predicted for every test example), then the difference
   pre-trained - random init at each lambda with its standard error (the two rows' errors
   added in quadrature).

The fine-tuning recipe is GPT-1's but for the learning rate, the batch and the epochs
(see docs/transfer.md): 2e-3 instead of 6.25e-5, batches of 8 instead of 32, 1 epoch
instead of 3 (375 steps on 3,000 examples). At that rate a random initialisation learns
nothing in 375 steps; `--learning_rate 3e-4` is the fairer comparison (it learns to 61%,
and the gap is 9 points): docs/transfer.md has both.
Everything goes under --out_dir: task/, pretrained/, runs/<init>-lm<lambda>-seed<s>/ (each
fine-tuning run's results.json and classifier), results.json (the table's numbers).

Imports: the standard library, numpy and tinygpt.
"""

import argparse
import json
import math
import os
import time

import numpy as np

INITS = ("random", "pretrained")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.split(
        "\n")[0], allow_abbrev=False)
    p.add_argument("--out_dir", default="out-transfer", help="where everything is written")
    p.add_argument("--overwrite", action="store_true",
                   help="replace runs already in --out_dir (else they are refused)")
    task = p.add_argument_group("the task (ignored with --task)")
    task.add_argument("--task", default="", help="a task folder already written (else one is "
                                                 "made in OUT_DIR/task)")
    task.add_argument("--data", default="shakespeare", help="the play text (default: "
                                                            "shakespeare)")
    task.add_argument("--kind", default="misspell", choices=("swap", "shuffle", "replace",
                                                          "misspell"))
    task.add_argument("--task_seed", type=int, default=0)
    task.add_argument("--n_train", type=int, default=3000)
    task.add_argument("--n_val", type=int, default=300)
    task.add_argument("--n_test", type=int, default=1000)
    pre = p.add_argument_group("pre-training (ignored with --pretrained)")
    pre.add_argument("--pretrained", default="", help="a `tinygpt train` out_dir to reuse")
    pre.add_argument("--pretrain_iters", type=int, default=2000)
    pre.add_argument("--n_layer", type=int, default=4)
    pre.add_argument("--n_head", type=int, default=4)
    pre.add_argument("--n_embd", type=int, default=128)
    pre.add_argument("--block_size", type=int, default=128)
    pre.add_argument("--pretrain_batch_size", type=int, default=12)
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ft.add_argument("--lm_coefs", type=float, nargs="+", default=[0.0, 0.5])
    ft.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    ft.add_argument("--learning_rate", type=float, default=2e-3)
    ft.add_argument("--epochs", type=int, default=1)
    ft.add_argument("--batch_size", type=int, default=8)
    ft.add_argument("--clf_dropout", type=float, default=0.1)
    args = p.parse_args(argv)
    for name in ("n_train", "n_val", "n_test", "pretrain_iters", "n_layer", "n_head", "n_embd",
                 "block_size", "pretrain_batch_size", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct integers >= 0, got {args.seeds}")
    if min(args.lm_coefs) < 0:
        p.error(f"--lm_coefs must be >= 0, got {args.lm_coefs}")
    if not args.learning_rate > 0:
        p.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    return args


# --- the pieces -------------------------------------------------------------------------
def write_task(args, folder):
    """Make the acceptability task with args' settings and save it in `folder`."""
    from tinygpt.data import load_text
    from tinygpt.data.acceptability import make_acceptability
    from tinygpt.data.cloze import save_task
    task = make_acceptability(load_text(args.data), kind=args.kind, seed=args.task_seed,
                              n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
    save_task(task, folder, overwrite=args.overwrite)
    return task


def pretrain(args, task_dir, out_dir, log):
    """Pre-train a char GPT on task_dir/pretrain.txt into out_dir (tinygpt's trainer)."""
    from tinygpt.train import train
    train(out_dir=out_dir, data=os.path.join(task_dir, "pretrain.txt"), n_layer=args.n_layer,
          n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
          batch_size=args.pretrain_batch_size, max_iters=args.pretrain_iters,
          lr_decay_iters=args.pretrain_iters, warmup_iters=min(100, args.pretrain_iters // 10),
          eval_interval=max(1, args.pretrain_iters // 4), overwrite=args.overwrite, log=log)


def zero_shot_accuracy(model, tokenizer, examples, batch_size=64):
    """The fraction of examples where the ending with the highest total log-likelihood
    under the language model (read after "\\n" + story, its own "\\n" included) is the
    right one. Rows longer than the block keep their last block_size + 1 tokens."""
    from tinygpt.autograd import no_grad
    block = model.config.block_size
    rows, owners = [], []                     # (ids, number of scored tokens), example index
    for i, e in enumerate(examples):
        context = tokenizer.encode("\n" + e.story)
        for ending in e.endings:
            scored = tokenizer.encode(ending + "\n")
            ids = (context + scored)[-(block + 1):]
            rows.append((ids, min(len(scored), len(ids) - 1)))
            owners.append(i)
    totals = np.zeros(len(rows))
    model.eval()
    with no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            T = max(len(ids) for ids, _ in chunk) - 1
            x = np.zeros((len(chunk), T), dtype=np.int64)
            y = np.full((len(chunk), T), -1, dtype=np.int64)
            for r, (ids, n) in enumerate(chunk):
                x[r, :len(ids) - 1] = ids[:-1]
                y[r, len(ids) - 1 - n:len(ids) - 1] = ids[len(ids) - n:]
            logits, _ = model(x)
            z = np.asarray(logits.data, dtype=np.float64)
            z = z - z.max(axis=-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
            picked = np.take_along_axis(logp, np.maximum(y, 0)[..., None], axis=-1)[..., 0]
            totals[start:start + len(chunk)] = (picked * (y >= 0)).sum(axis=1)
    correct, k = 0, 0
    for e in examples:
        n = len(e.endings)
        correct += int(np.argmax(totals[k:k + n]) == e.label)
        k += n
    return correct / len(examples)


def majority_accuracy(train, test):
    """The test accuracy of always predicting the training split's most common label."""
    labels = [e.label for e in train]
    majority = max(sorted(set(labels)), key=labels.count)
    return sum(e.label == majority for e in test) / len(test)


def mean_and_se(values):
    """(mean, standard error of the mean); the error is 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(se)


def table(results):
    """The printed table of `results` (as `run` returns them)."""
    lines = [f"{'row':<40} {'test accuracy':>15}   per seed",
             f"{'-' * 40} {'-' * 15}   {'-' * 16}",
             f"{'majority-class baseline':<40} {100 * results['majority']:>14.1f}%",
             f"{'pre-trained LM, zero-shot likelihood':<40} {100 * results['zero_shot']:>14.1f}%"]
    for row in results["rows"]:
        name = f"fine-tuned, {row['init']} init, lambda {row['lm_coef']:g}"
        per_seed = " ".join(f"{100 * a:.1f}" for a in row["accuracies"])
        lines.append(f"{name:<40} {100 * row['mean']:>7.1f} +- {100 * row['se']:<4.1f}%   "
                     f"{per_seed}")
    for d in results["differences"]:
        ratio = d["diff"] / d["se"] if d["se"] > 0 else float("inf")
        lines.append(f"{'pre-trained - random init, lambda ' + format(d['lm_coef'], 'g'):<40} "
                     f"{100 * d['diff']:>+7.1f} +- {100 * d['se']:<4.1f}    ({ratio:.1f} SE)")
    return "\n".join(lines)


# --- the experiment -----------------------------------------------------------------------
def run(args, log=print):
    """The experiment (see the module docstring); returns the results dict."""
    from tinygpt.data.cloze import load_task
    from tinygpt.train import load_for_inference
    from tinygpt.train.finetune import FinetuneConfig, finetune
    started = time.perf_counter()
    os.makedirs(args.out_dir, exist_ok=True)
    task_dir = args.task or os.path.join(args.out_dir, "task")
    if not args.task:
        write_task(args, task_dir)
    task = load_task(task_dir)
    log(f"task {task_dir}: {len(task.train)} train, {len(task.val)} val, {len(task.test)} "
        f"test examples")
    pre_dir = args.pretrained or os.path.join(args.out_dir, "pretrained")
    if not args.pretrained:
        mark = time.perf_counter()
        pretrain(args, task_dir, pre_dir, log=lambda line: None)
        log(f"pre-trained {pre_dir} in {time.perf_counter() - mark:.0f} s")
    model, tokenizer = load_for_inference(pre_dir)
    shape = {name: getattr(model.config, name) for name in
             ("n_layer", "n_head", "n_embd", "block_size", "bias", "gelu_approximate")}
    zero_shot = zero_shot_accuracy(model, tokenizer, task.test)
    log(f"zero-shot likelihood choice: {100 * zero_shot:.1f}%")
    rows = []
    for init in args.inits:
        for lm_coef in args.lm_coefs:
            accuracies = []
            for seed in args.seeds:
                out = os.path.join(args.out_dir, "runs", f"{init}-lm{lm_coef:g}-seed{seed}")
                cfg = FinetuneConfig(
                    task=task_dir, out_dir=out, init_from=pre_dir if init == "pretrained" else "",
                    overwrite=args.overwrite, lm_coef=lm_coef, learning_rate=args.learning_rate,
                    epochs=args.epochs, batch_size=args.batch_size,
                    clf_dropout=args.clf_dropout, seed=seed, log_interval=10 ** 9, **shape)
                mark = time.perf_counter()
                result = finetune(cfg, log=lambda line: None)
                accuracies.append(result["test_accuracy"])
                log(f"{init} init, lambda {lm_coef:g}, seed {seed}: test "
                    f"{100 * result['test_accuracy']:.1f}%, val {100 * result['val_accuracy']:.1f}%"
                    f" ({time.perf_counter() - mark:.0f} s)")
            mean, se = mean_and_se(accuracies)
            rows.append({"init": init, "lm_coef": lm_coef, "accuracies": accuracies,
                         "mean": mean, "se": se})
    differences = []
    for lm_coef in args.lm_coefs:
        pair = {r["init"]: r for r in rows if r["lm_coef"] == lm_coef}
        if len(pair) == 2:
            differences.append({"lm_coef": lm_coef,
                                "diff": pair["pretrained"]["mean"] - pair["random"]["mean"],
                                "se": math.hypot(pair["pretrained"]["se"], pair["random"]["se"])})
    return {"task": task_dir, "pretrained": pre_dir, "test_examples": len(task.test),
            "majority": majority_accuracy(task.train, task.test), "zero_shot": zero_shot,
            "rows": rows, "differences": differences,
            "seconds": time.perf_counter() - started, "args": vars(args)}


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print()
    print(table(results))
    print(f"\n{results['test_examples']} test examples; {results['seconds'] / 60:.1f} min "
          f"in all")
    with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("transfer")
