"""`python -m bench.context`: context extension, learned positions against rotary ones
(RoPE) with and without position interpolation, measured as validation loss.

Two character-level GPTs train the same recipe at block size T (default 64) from the same
seed and batches: one with learned positions (GPT-2's wpe), one with rotary positions.
Each is then evaluated on windows of T, 2T and 4T tokens of the validation split (the
mean loss over every position of a window, over the same random windows for every row):

- learned positions: T only; a longer context is refused (`GPT.extend_context`): wpe has
  a row for each of the T trained positions and nothing beyond;
- rotary, no interpolation: positions past T are angles the model never saw;
- rotary with position interpolation (Chen et al. 2023): rope_scale 2 at 2T, 4 at 4T, so
  every position maps into [0, T);
- the same after a short fine-tune at 2T with rope_scale 2 (--finetune_iters).

The text is tiny Shakespeare from ../shared/data when that file exists, else the
embedded corpus (--data overrides). Imports: tinygpt.
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

from tinygpt.data import BatchSampler
from tinygpt.optim import AdamW
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train.trainer import evaluate

SHARED_TEXT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "tinyshakespeare.txt"


def train(position, args):
    """A Trainer after its run: the char recipe at block_size T."""
    config = TrainConfig(out_dir=tempfile.mkdtemp(prefix=f"tinygpt-context-{position}-"),
                         data=args.data, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, batch_size=args.batch_size,
                         max_iters=args.max_iters, lr_decay_iters=args.max_iters,
                         warmup_iters=min(100, args.max_iters // 5),
                         eval_interval=args.max_iters, eval_iters=args.eval_iters,
                         log_interval=max(1, args.max_iters // 4), save_checkpoints=False,
                         seed=args.seed, position=position)
    trainer = Trainer(config, log=lambda line: None)
    trainer.run()
    return trainer


def val_loss(model, trainer, block_size, args):
    """The mean validation loss over eval_iters fixed windows of block_size tokens."""
    return evaluate(model, {"val": trainer.val_data}, block_size, args.batch_size,
                    args.eval_iters, seed=args.seed)["val"]


def finetune(model, trainer, block_size, args):
    """A few AdamW steps on training windows of block_size tokens (constant learning rate)."""
    model.train()
    optimizer = AdamW(model.parameters(), lr=args.finetune_lr, betas=(0.9, 0.99),
                      weight_decay=0.1)
    sampler = BatchSampler(trainer.train_data, block_size, args.batch_size, seed=args.seed + 1)
    for _ in range(args.finetune_iters):
        _, loss = model(*sampler.get_batch())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.context",
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--block_size", type=int, default=64, help="T, the trained context")
    parser.add_argument("--max_iters", type=int, default=400, help="iterations of each run")
    parser.add_argument("--finetune_iters", type=int, default=100,
                        help="iterations of the fine-tune at 2T")
    parser.add_argument("--finetune_lr", type=float, default=3e-4)
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=12)
    parser.add_argument("--eval_iters", type=int, default=20,
                        help="validation batches for each figure")
    parser.add_argument("--data", default=str(SHARED_TEXT) if SHARED_TEXT.is_file()
                        else "default", help="the text (default: tiny Shakespeare from "
                                             "../shared/data if present, else the embedded "
                                             "corpus)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    T = args.block_size
    lengths = (T, 2 * T, 4 * T)
    start = time.perf_counter()
    rows = {}

    learned = train("learned", args)
    cells = [f"{val_loss(learned.model, learned, T, args):.4f}"]
    try:
        learned.model.extend_context(2 * T)
    except ValueError:
        cells += ["refused", "refused"]       # wpe has T rows: see the note under the table
    rows["learned (wpe)"] = cells

    rotary = train("rotary", args)
    model = rotary.model
    rows["rotary, no interpolation"] = [
        f"{val_loss(model.extend_context(L, rope_scale=1.0), rotary, L, args):.4f}"
        for L in lengths]
    rows["rotary, interpolation (scale L/T)"] = [
        f"{val_loss(model.extend_context(L, rope_scale=L / T), rotary, L, args):.4f}"
        for L in lengths]
    tuned = finetune(copy.deepcopy(model).extend_context(2 * T, rope_scale=2.0), rotary,
                     2 * T, args)
    rows[f"rotary, interpolation, {args.finetune_iters}-step fine-tune at 2T"] = [
        f"{val_loss(tuned.extend_context(L, rope_scale=max(L / T, 2.0)), rotary, L, args):.4f}"
        for L in lengths]
    seconds = time.perf_counter() - start

    name = Path(args.data).name if args.data != "default" else "the embedded corpus"
    print(f"\nValidation loss (nats per character) on {name}; models of {args.n_layer} "
          f"layers, {args.n_head} heads, {args.n_embd} channels trained {args.max_iters} "
          f"iterations at T = {T} (batch {args.batch_size}, seed {args.seed}); "
          f"{args.eval_iters} batches of windows of each length; {seconds:.0f} s in all\n")
    width = max(len(r) for r in rows)
    header = f"| {'positions':<{width}} | " + " | ".join(
        f"{label} = {L}" for label, L in zip(("T", "2T", "4T"), lengths)) + " |"
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row, cells in rows.items():
        print(f"| {row:<{width}} | " + " | ".join(
            f"{c:>{len(label) + len(str(L)) + 3}}" for c, label, L in
            zip(cells, ("T", "2T", "4T"), lengths)) + " |")
    print(f"\nlearned: GPT.extend_context({2 * T}) raises ValueError (wpe holds {T} trained "
          "positions; no row exists for the others). The fine-tuned row runs at rope_scale 2 "
          "at T and 2T, 4 at 4T.")
    return rows


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("context")
