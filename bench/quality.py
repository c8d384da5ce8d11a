"""Quality benchmark: nanoGPT's CPU recipe on tiny Shakespeare over several seeds, tinygpt
beside the same recipe in PyTorch (`python -m bench quality`).

The recipe is the `shakespeare-char-cpu` preset of `python -m tinygpt train`: 4 layers,
4 heads, 128 channels, block 64, batch 12, dropout 0, exact GELU, no biases, AdamW (lr 1e-3,
betas (0.9, 0.99), weight decay 0.1), 100 warm-up iterations then cosine decay to 1e-4 over
2000 iterations, gradient clipping at 1.0. For each seed:

- tinygpt trains it with `tinygpt.train.Trainer` (its `seed` set to the seed); its "val20" is the
  validation loss the trainer logs at the last iteration (eval_iters = 20 batches);
- PyTorch, where installed, trains the same model with nanoGPT's own loop and random
  streams: `torch.manual_seed(seed)`, nanoGPT's initialisation order, `torch.randint`
  batches, and `estimate_loss` drawing eval_iters fresh batches of each split at every
  evaluation. Its "val20" is nanoGPT's logged number (seed 1337 is nanoGPT's default).

A 20-batch validation loss moves by about +-0.015 with the batches drawn alone, so every
final model is also scored on the same `--eval-batches` fixed validation windows ("val400"
by default). The table gives both per seed, their mean and spread per framework, and how
many runs reach `--target`. Slow: a seed takes minutes (`--max-iters` shortens a trial).

Imports: numpy, tinygpt; torch lazily and optionally. Never imported by the package.
"""

import argparse
import json
import statistics
import tempfile
import time

import numpy as np

import tinygpt as tg
from tinygpt.cli.train import PRESETS
from tinygpt.optim import get_schedule
from tinygpt.train import TrainConfig
from tinygpt.train.trainer import Trainer

from .ops import _import_torch, _threads
from .torch_gpt import torch_gpt_class

RECIPE = "shakespeare-char-cpu"
FIXED_SEED = 0              # the generator of the fixed validation windows


def recipe_config(data, seed, out_dir, max_iters=None):
    """The recipe's TrainConfig for one seed. A shorter `max_iters` keeps the schedule's
    shape: the cosine ends there and the warm-up stays 5% of it."""
    values = dict(PRESETS[RECIPE], data=data, seed=seed, out_dir=out_dir,
                  save_checkpoints=False, log_interval=10 ** 9)
    if max_iters is not None:
        values.update(max_iters=max_iters, lr_decay_iters=max_iters,
                      warmup_iters=min(values["warmup_iters"], max_iters // 20),
                      eval_interval=min(values["eval_interval"], max(1, max_iters)))
    return TrainConfig(**values)


def fixed_windows(val_data, block_size, batch_size, n_batches):
    """`n_batches` (batch_size,) arrays of window starts in the validation split."""
    rng = np.random.default_rng(FIXED_SEED)
    return rng.integers(0, len(val_data) - block_size, size=(n_batches, batch_size))


def fixed_loss(loss_of, val_data, starts, block_size):
    """Mean of loss_of(x, y) over the windows `starts` (NumPy int64 arrays in, float out)."""
    positions = np.arange(block_size)
    losses = []
    for row in starts:
        at = row[:, None] + positions
        losses.append(loss_of(val_data[at], val_data[at + 1]))
    return float(np.mean(losses))


def run_tinygpt(trainer, starts):
    """Train with `trainer` (a fresh Trainer of the recipe) and score the final model."""
    cfg = trainer.config
    history = trainer.run()
    model = trainer.model
    model.eval()
    val = trainer.val_data.astype(np.int64)

    def loss_of(x, y):
        with tg.no_grad():
            return model(tg.tensor(x), tg.tensor(y))[1].item()

    return {"val20": history[-1]["val_loss"],
            "fixed": fixed_loss(loss_of, val, starts, cfg.block_size)}


def run_torch(torch, cfg, train_data, val_data, vocab_size, starts):
    """nanoGPT's train.py loop for `cfg` (CPU, float32, one micro-batch)."""
    torch.manual_seed(cfg.seed)
    model = torch_gpt_class()(cfg.model_config(vocab_size))
    named = list(model.named_parameters())
    groups = [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                            fused=False)
    schedule = get_schedule(cfg.schedule, max_lr=cfg.learning_rate, min_lr=cfg.min_lr,
                            warmup_iters=cfg.warmup_iters, lr_decay_iters=cfg.lr_decay_iters)
    splits = {"train": torch.from_numpy(train_data.astype(np.int64)),
              "val": torch.from_numpy(val_data.astype(np.int64))}
    T, B = cfg.block_size, cfg.batch_size

    def get_batch(split):
        data = splits[split]
        ix = torch.randint(len(data) - T, (B,))
        return (torch.stack([data[i:i + T] for i in ix]),
                torch.stack([data[i + 1:i + 1 + T] for i in ix]))

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {split: float(np.mean([model(*get_batch(split))[1].item()
                                     for _ in range(cfg.eval_iters)]))
               for split in ("train", "val")}
        model.train()
        return out

    X, Y = get_batch("train")
    val20 = None
    for it in range(cfg.max_iters + 1):
        for group in opt.param_groups:
            group["lr"] = schedule(it)
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            val20 = estimate_loss()["val"]
        if it == cfg.max_iters:
            break
        _, loss = model(X, Y)
        X, Y = get_batch("train")
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()

    def loss_of(x, y):
        with torch.no_grad():
            return model(torch.from_numpy(x), torch.from_numpy(y))[1].item()

    return {"val20": val20, "fixed": fixed_loss(loss_of, val_data.astype(np.int64), starts, T)}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench quality",
        description=f"Final validation loss of the {RECIPE} recipe over seeds, tinygpt "
                    "beside nanoGPT's loop in PyTorch when installed.")
    p.add_argument("--data", default="shakespeare",
                   help="'shakespeare' (cached, $TINYGPT_SHAKESPEARE, or downloaded) or a text file")
    p.add_argument("--seeds", default="1337,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--eval-batches", type=int, default=400,
                   help="fixed validation batches every final model is scored on")
    p.add_argument("--target", type=float, default=1.89,
                   help="the validation loss a run should reach")
    p.add_argument("--max-iters", type=int, default=None,
                   help="shorten the recipe (a trial run; the cosine ends there too)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds: give at least one seed")
    if args.eval_batches < 1:
        p.error(f"--eval-batches must be at least 1, got {args.eval_batches}")
    if args.max_iters is not None and args.max_iters < 1:
        p.error(f"--max-iters must be at least 1, got {args.max_iters}")
    return args


def summarize(runs, key, target):
    values = [run[key] for run in runs]
    return {"mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values),
            "at_or_below_target": sum(v <= target for v in values)}


def main(argv=None):
    args = parse_args(argv)
    torch = None if args.no_torch else _import_torch(_threads())
    frameworks = ["tinygpt"] + (["torch"] if torch is not None else [])
    results = {name: [] for name in frameworks}
    print(f"quality benchmark: recipe {RECIPE}, seeds {args.seeds}, scored on "
          f"{args.eval_batches} fixed validation batches; PyTorch "
          + (torch.__version__ if torch is not None else "not measured"), flush=True)
    with tempfile.TemporaryDirectory(prefix="tinygpt-quality-") as tmp:
        for seed in args.seeds:
            cfg = recipe_config(args.data, seed, f"{tmp}/seed{seed}", args.max_iters)
            start = time.perf_counter()
            trainer = Trainer(cfg, log=lambda *a, **k: None)    # builds the splits
            starts = fixed_windows(trainer.val_data, cfg.block_size, cfg.batch_size,
                                   args.eval_batches)
            run = run_tinygpt(trainer, starts)
            run.update(seed=seed, seconds=time.perf_counter() - start)
            results["tinygpt"].append(run)
            print(f"  seed {seed}: tinygpt val20 {run['val20']:.4f}, val{args.eval_batches} "
                  f"{run['fixed']:.4f} ({run['seconds']:.0f} s)", flush=True)
            if torch is not None:
                start = time.perf_counter()
                run = run_torch(torch, cfg, trainer.train_data, trainer.val_data,
                                trainer.model.config.vocab_size, starts)
                run.update(seed=seed, seconds=time.perf_counter() - start)
                results["torch"].append(run)
                print(f"  seed {seed}: torch   val20 {run['val20']:.4f}, "
                      f"val{args.eval_batches} {run['fixed']:.4f} ({run['seconds']:.0f} s)",
                      flush=True)
    summary = {name: {key: summarize(runs, key, args.target) for key in ("val20", "fixed")}
               for name, runs in results.items()}
    print_table(results, summary, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"recipe": RECIPE, "eval_batches": args.eval_batches,
                       "target": args.target, "max_iters": args.max_iters, "runs": results,
                       "summary": summary}, f, indent=2)
        print(f"results written to {args.json}")
    return 0


def print_table(results, summary, args):
    fixed = f"val{args.eval_batches}"
    print(f"\nfinal validation loss per seed (val20: the run's own 20-batch estimate; {fixed}: "
          f"the same {args.eval_batches} fixed batches for every model)")
    names = list(results)
    header = f"{'seed':>6}" + "".join(f"  {n + ' val20':>14}  {n + ' ' + fixed:>16}" for n in names)
    print(header)
    print("-" * len(header))
    for i, seed in enumerate(args.seeds):
        print(f"{seed:>6}" + "".join(f"  {results[n][i]['val20']:>14.4f}  "
                                     f"{results[n][i]['fixed']:>16.4f}" for n in names))
    print("-" * len(header))
    for stat in ("mean", "stdev", "min", "max"):
        print(f"{stat:>6}" + "".join(f"  {summary[n]['val20'][stat]:>14.4f}  "
                                     f"{summary[n]['fixed'][stat]:>16.4f}" for n in names))
    for n in names:
        s = summary[n]
        print(f"{n}: {s['val20']['at_or_below_target']} of {len(args.seeds)} runs reach "
              f"val20 <= {args.target}; {s['fixed']['at_or_below_target']} reach "
              f"{fixed} <= {args.target}")


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("quality")
