"""Benchmark: validation loss of a trained GPT against the sparsity of global magnitude
pruning, without and with a short recovery fine-tune.

Run as `python -m bench.prune` (from the repository root). It trains the default recipe
(`python -m tinygpt train`'s defaults) into --out_dir, or reuses the checkpoint there.
For each sparsity (0, 30, 50, 70, 90% by default) it loads the trained model afresh,
prunes that fraction of the blocks' Linear weights by magnitude, ranked over all of them
together (`tinygpt.nn.prune(model, s, scope="global")`; embeddings, LayerNorms and biases
kept), measures the validation loss, then fine-tunes for --iters iterations with AdamW at
a constant --lr (default 1e-4, the recipe's final learning rate; weight decay 0.1,
gradients clipped at 1.0, batches of the recipe's size from the training split; the
masks keep the pruned weights at zero) and measures it again. The 0% row's fine-tune is
the control: what the extra iterations give an unpruned model.

The validation loss is the mean over --eval_iters batches of the same windows every time
(`tinygpt.train.evaluate`, one seed). Imports: numpy, tinygpt, bench.int8 (the run).
"""

import argparse
import os
import time

from bench.int8 import ensure_run, run_splits

SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9)


def measure(out_dir, sparsities=SPARSITIES, iters=200, lr=1e-4, eval_iters=100, log=print):
    """[(sparsity, val loss pruned, val loss after fine-tuning, sparsity after it)]."""
    from tinygpt.data import BatchSampler
    from tinygpt.nn import prune, sparsity
    from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups
    from tinygpt.train import evaluate, load_for_inference

    rows = []
    splits = config = None
    for amount in sparsities:
        model, tokenizer = load_for_inference(out_dir)
        if splits is None:
            splits, config = run_splits(out_dir, tokenizer)
        block, batch = model.config.block_size, config.get("batch_size", 12)

        def val_loss():
            return evaluate(model, {"val": splits["val"]}, block, batch, eval_iters,
                            seed=0)["val"]

        if amount:
            prune(model, amount, scope="global")
        pruned = val_loss()
        start = time.perf_counter()
        model.train()
        optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=lr)
        sampler = BatchSampler(splits["train"], block, batch, seed=1)
        for _ in range(iters):
            _, loss = model(*sampler.get_batch())
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        tuned = val_loss()
        rows.append((amount, pruned, tuned, sparsity(model)))
        log(f"sparsity {amount:.0%}: val loss {pruned:.4f} pruned, {tuned:.4f} after "
            f"{iters} iterations ({time.perf_counter() - start:.0f} s)")
    return rows


def table(rows, iters, lr):
    base = rows[0][1] if rows and rows[0][0] == 0 else None
    lines = [f"| sparsity | val loss, pruned | val loss, +{iters} iters at lr {lr:g} | "
             f"sparsity after |", "| --- | --- | --- | --- |"]
    for amount, pruned, tuned, after in rows:
        delta = "" if base is None else f" ({pruned - base:+.4f})"
        delta2 = "" if base is None else f" ({tuned - base:+.4f})"
        lines.append(f"| {amount:.0%} | {pruned:.4f}{delta} | {tuned:.4f}{delta2} | "
                     f"{after:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__.split(
        "\n")[0], allow_abbrev=False)
    parser.add_argument("--out_dir", default="out", help="the run to reuse or train (ckpt.npz)")
    parser.add_argument("--max_iters", type=int, default=None,
                        help="iterations when training (default: the recipe's 2000)")
    parser.add_argument("--iters", type=int, default=200, help="recovery fine-tune iterations")
    parser.add_argument("--lr", type=float, default=1e-4, help="its learning rate")
    parser.add_argument("--eval_iters", type=int, default=100)
    parser.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES),
                        help="comma-separated fractions in [0, 1)")
    args = parser.parse_args(argv)
    try:
        sparsities = [float(s) for s in args.sparsities.split(",")]
    except ValueError:
        parser.error(f"--sparsities must be comma-separated numbers, got {args.sparsities!r}")
    if any(not 0 <= s < 1 for s in sparsities):
        parser.error(f"--sparsities must be in [0, 1), got {args.sparsities!r}")
    if args.iters < 0 or args.eval_iters < 1 or not args.lr > 0:
        parser.error("--iters must be >= 0, --eval_iters >= 1 and --lr > 0")
    ensure_run(args.out_dir, args.max_iters)
    rows = measure(os.path.abspath(args.out_dir), sparsities, args.iters, args.lr,
                   args.eval_iters)
    print(table(rows, args.iters, args.lr))
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("prune")
