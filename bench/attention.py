"""`python -m bench attention`: what padding masks and banded layers cost a
training step (forward, backward, no optimizer), side by side in one run.

- padding: a batch whose rows are right-padded to the longest (a quarter of the positions
  padding) with `attention_mask`, against the same batch without a mask: the mask rides in
  the fused attention op (its padded keys get -inf inside each tile), so the two should
  cost about the same;
- banded: a small GPT at T = 512, 1024, 2048 with every layer banded (window W) against
  every layer dense: a banded layer's tiles skip the keys left of the band, so its
  attention grows with T * W instead of T^2.

Steps alternate between the variants; the table gives medians. Imports: numpy, tinygpt.
"""

import argparse
import statistics

import numpy as np

import tinygpt as tg
from tinygpt import GPT, GPTConfig

from .timing import median_seconds


def step_seconds(model, idx, targets, mask=None, steps=5):
    """Median seconds of forward + backward, after one untimed step."""
    def step():
        _, loss = model(idx, targets, attention_mask=mask)
        loss.backward()
        model.zero_grad()
    return median_seconds(step, steps)


def padding_rows(args, rng):
    config = GPTConfig(block_size=args.padding_T, vocab_size=65, n_layer=4, n_head=4,
                       n_embd=128, bias=False)
    tg.manual_seed(0)
    model = GPT(config)
    B, T = args.padding_B, args.padding_T
    idx = rng.integers(0, 64, (B, T))
    targets = rng.integers(0, 64, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    lengths = rng.integers(T // 2, T + 1, B)            # a quarter padding on average
    for i, n in enumerate(lengths):
        mask[i, n:] = 0
        targets[i, n:] = -100
    plain, masked = [], []
    for _ in range(args.rounds):
        plain.append(step_seconds(model, idx, targets, None, args.steps))
        masked.append(step_seconds(model, idx, targets, mask, args.steps))
    p, m = statistics.median(plain), statistics.median(masked)
    padded = 1 - mask.mean()
    print(f"\npadding: B {B}, T {T}, 4 layers, C 128; {padded:.0%} of the positions padding")
    print(f"{'batch':<26} {'ms/step':>9}")
    print(f"{'no mask':<26} {p * 1e3:>9.1f}")
    print(f"{'right-padded, with mask':<26} {m * 1e3:>9.1f}   ({m / p:.2f}x)")
    return {"padding": {"B": B, "T": T, "padded_fraction": float(padded),
                        "no_mask_ms": p * 1e3, "mask_ms": m * 1e3}}


def banded_rows(args, rng):
    print(f"\nbanded: 2 layers, C 64, 2 heads, batch {args.banded_B}; every layer banded "
          f"(window {args.window}) or every layer dense")
    print(f"{'T':>6} {'dense ms':>10} {'banded ms':>10} {'dense / banded':>15}")
    rows = []
    for T in args.lengths:
        times = {}
        models = {}
        for kind in ("dense", "banded"):
            extra = dict(attn_window=args.window, attn_pattern="banded") if kind == "banded" \
                else {}
            tg.manual_seed(0)
            models[kind] = GPT(GPTConfig(block_size=T, vocab_size=65, n_layer=2, n_head=2,
                                         n_embd=64, bias=False, **extra))
        idx = rng.integers(0, 65, (args.banded_B, T))
        targets = rng.integers(0, 65, (args.banded_B, T))
        for kind in models:
            times[kind] = []
        for _ in range(args.rounds):
            for kind, model in models.items():
                times[kind].append(step_seconds(model, idx, targets, None, args.steps))
        d, b = statistics.median(times["dense"]), statistics.median(times["banded"])
        print(f"{T:>6} {d * 1e3:>10.1f} {b * 1e3:>10.1f} {d / b:>15.2f}")
        rows.append({"T": T, "dense_ms": d * 1e3, "banded_ms": b * 1e3})
    return {"banded": {"window": args.window, "rows": rows}}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench attention",
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--padding-B", type=int, default=12)
    parser.add_argument("--padding-T", type=int, default=256)
    parser.add_argument("--banded-B", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    results = {**padding_rows(args, rng), **banded_rows(args, rng)}
    if args.json:
        import json
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("attention")
