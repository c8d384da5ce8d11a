"""`python -m bench moe`: a mixture of experts against the dense MLP with the same
active parameters per token, on the char recipe, side by side in one run.

Both train `python -m tinygpt train`'s recipe (4 layers, 4 heads, 128 channels, block 64,
batch 12, AdamW with warm-up and cosine decay) for the same number of iterations from the
same seed and batches: one with a dense MLP of hidden width 4C in every block, one with 8
experts of hidden width 2C in every block and each token routed to 2 of them (so a token
goes through 4C hidden units either way, and the experts hold 4x the MLP parameters). The
table gives each one's median ms per iteration, its validation loss at the end (the mean
over the same 20 fixed batches), its parameters and, for the experts, the tokens dropped
past an expert's capacity. Imports: tinygpt.
"""

import argparse
import json
import statistics
import tempfile

from tinygpt.train import TrainConfig, Trainer


def train(name, args, **model):
    """(history, ms per iteration of the logged iterations, trainer) of one run."""
    records = []
    config = TrainConfig(out_dir=tempfile.mkdtemp(prefix=f"tinygpt-moe-{name}-"),
                         data=args.data, max_iters=args.iters, lr_decay_iters=args.iters,
                         warmup_iters=min(100, args.iters // 5),
                         eval_interval=args.iters, eval_iters=20, log_interval=10,
                         save_checkpoints=False, seed=args.seed, **model)
    trainer = Trainer(config, log=lambda line: records.append(line))
    history = trainer.run()
    with open(trainer.log_path, encoding="utf-8") as f:
        ms = [json.loads(line)["ms_per_iter"] for line in f if '"train"' in line]
    return history, statistics.median(ms[1:] or ms), trainer


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench moe",
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--iters", type=int, default=500, help="iterations of each run")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top_k", type=int, default=2)
    parser.add_argument("--data", default="default", help="the training text (default: the "
                                                          "embedded corpus)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rows = {}
    runs = {"dense MLP": {},
            f"{args.experts} experts, top-{args.top_k}": dict(n_expert=args.experts,
                                                              expert_top_k=args.top_k)}
    for name, model in runs.items():
        history, ms, trainer = train(name.split()[0], args, **model)
        stats = trainer.model.moe_stats()
        rows[name] = {"ms_per_iter": ms, "val_loss": history[-1]["val_loss"],
                      "train_loss": history[-1]["train_loss"],
                      "parameters": trainer.model.num_parameters(),
                      "dropped_last_batch": None if stats is None else int(stats["dropped"])}
    print(f"\n{args.iters} iterations of the char recipe (4 layers, 128 channels, block 64, "
          f"batch 12), seed {args.seed}")
    print(f"{'MLP':<22} {'ms/iter':>8} {'val loss':>9} {'parameters':>11} {'dropped':>8}")
    for name, row in rows.items():
        dropped = "-" if row["dropped_last_batch"] is None else str(row["dropped_last_batch"])
        print(f"{name:<22} {row['ms_per_iter']:>8.1f} {row['val_loss']:>9.4f} "
              f"{row['parameters'] / 1e6:>10.2f}M {dropped:>8}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"iters": args.iters, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("moe")
