"""`python -m tinygpt plot`: draw a run's loss curves and training statistics as PNG files.

    python -m tinygpt plot --out_dir out                  # writes out/loss.png, ...
    python -m tinygpt plot --out_dir out --output_dir plots --params "attn|mlp"

Reads out_dir/log.jsonl (written by `python -m tinygpt train`) and writes:

- loss.png: the training loss of each logged iteration, and the train / val losses of
  each evaluation;
and, when the run was trained with `--stats true`:
- grad_norms.png: each parameter's gradient norm over the iterations;
- update_ratios.png: log10 of each parameter's update-to-data ratio, with the -3 line
  (1e-3) of the makemore lectures' rule of thumb;
- activations.png: the mean and the standard deviation of each block's output.

A GPT has a dozen parameter tensors per block, so the parameter plots have one panel per
kind of tensor (`transformer.h.*.attn.c_attn.weight`), one line per block in it, and one
panel for the tensors outside the blocks. matplotlib is an optional extra
(`pip install matplotlib`); only this command needs it.
"""

import math
import os
import re
import sys

from ..train.stats import read_log

LOG = "log.jsonl"
INSTALL = ("plot: matplotlib is not installed; it is an optional extra of tinygpt. Install it "
           "with `pip install matplotlib` (or `pip install -e \".[plot]\"` in a checkout)")
_BLOCK = re.compile(r"^(.*?\bh)\.(\d+)\.(.*)$")      # transformer.h.3.attn.c_attn.weight


def add_arguments(parser):
    parser.add_argument("--out_dir", default="out",
                        help="the training run's folder, holding log.jsonl (default: out)")
    parser.add_argument("--output_dir", default=None,
                        help="where to write the PNG files (default: --out_dir)")
    parser.add_argument("--params", default=None,
                        help="a regular expression: plot only the parameters whose names "
                             "match it (default: all)")


def run(args):
    path = os.path.join(args.out_dir, LOG)
    try:
        log = read_log(path)
    except FileNotFoundError:
        print(f"plot: no training log at {path}; train with `python -m tinygpt train --out_dir "
              f"{args.out_dir}` first (add `--stats true` for the gradient and activation "
              "plots)", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"plot: {e}", file=sys.stderr)
        return 1
    try:
        pattern = re.compile(args.params) if args.params else None
    except re.error as e:
        print(f"plot: --params {args.params!r} is not a regular expression: {e}", file=sys.stderr)
        return 2
    plt = import_pyplot()
    if plt is None:
        print(INSTALL, file=sys.stderr)
        return 1
    output_dir = args.output_dir or args.out_dir
    os.makedirs(output_dir, exist_ok=True)
    written = draw_all(plt, log, output_dir, pattern)
    for name in written:
        print(f"wrote {name}")
    if not log["stats"]:
        print("no statistics in this log: train with `--stats true` for the gradient, update "
              "and activation plots")
    return 0


def import_pyplot():
    """matplotlib.pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    # Agg draws to files only: no display needed (servers, CI), no window opened.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_all(plt, log, output_dir, pattern=None):
    """Write every plot the log has data for; returns the paths written."""
    written = []
    if log["train"] or log["eval"]:
        written.append(_save(plt, draw_loss(plt, log), output_dir, "loss.png"))
    if log["stats"]:
        series = parameter_series(log["stats"], pattern)
        if series:
            written.append(_save(plt, draw_parameters(plt, series, "grad_norm"),
                                 output_dir, "grad_norms.png"))
            written.append(_save(plt, draw_parameters(plt, series, "update_ratio"),
                                 output_dir, "update_ratios.png"))
        if any(r["activations"] for r in log["stats"]):
            written.append(_save(plt, draw_activations(plt, log["stats"]), output_dir,
                                 "activations.png"))
    return written


def _save(plt, fig, output_dir, name):
    path = os.path.join(output_dir, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the data -------------------------------------------------------------------------------
def parameter_series(stats, pattern=None):
    """{panel: {line: {"iter": [...], "grad_norm": [...], "update_ratio": [...]}}} from the
    "stats" records.

    A parameter `transformer.h.3.attn.c_attn.weight` is the line "h.3" in the panel
    `transformer.h.*.attn.c_attn.weight`; a parameter outside the blocks is a line of its
    own in the panel "outside the blocks". Missing values (null) stay None.
    """
    panels = {}
    for record in stats:
        for name, values in record["params"].items():
            if pattern is not None and not pattern.search(name):
                continue
            match = _BLOCK.match(name)
            if match:
                prefix, index, rest = match.groups()
                panel = f"{prefix}.*.{rest}"
                line = f"{prefix.rsplit('.', 1)[-1]}.{index}"
            else:
                panel, line = "outside the blocks", name
            entry = panels.setdefault(panel, {}).setdefault(
                line, {"iter": [], "grad_norm": [], "update_ratio": []})
            entry["iter"].append(record["iter"])
            entry["grad_norm"].append(values.get("grad_norm"))
            entry["update_ratio"].append(values.get("update_ratio"))
    # The blocks' panels first, in the order the parameters appear, then the rest.
    order = sorted(panels, key=lambda p: p == "outside the blocks")
    return {p: panels[p] for p in order}


def activation_series(stats):
    """{block: {"iter": [...], "mean": [...], "std": [...]}} from the "stats" records."""
    blocks = {}
    for record in stats:
        for name, values in record["activations"].items():
            entry = blocks.setdefault(name, {"iter": [], "mean": [], "std": []})
            entry["iter"].append(record["iter"])
            entry["mean"].append(values["mean"])
            entry["std"].append(values["std"])
    return blocks


def _log10(values):
    return [math.log10(v) if v is not None and v > 0 else None for v in values]


def _points(xs, ys):
    """The (x, y) pairs whose y is a number: null values leave a gap-free line."""
    kept = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


# --- the figures ----------------------------------------------------------------------------
def draw_loss(plt, log):
    fig, ax = plt.subplots(figsize=(8, 5))
    if log["train"]:
        ax.plot(*_points([r["iter"] for r in log["train"]], [r.get("loss") for r in log["train"]]),
                color="tab:blue", alpha=0.6, linewidth=1, label="train (logged iterations)")
    if log["eval"]:
        its = [r["iter"] for r in log["eval"]]
        ax.plot(*_points(its, [r.get("train_loss") for r in log["eval"]]), "o-",
                color="tab:green", markersize=3, label="train (evaluation)")
        ax.plot(*_points(its, [r.get("val_loss") for r in log["eval"]]), "o-",
                color="tab:red", markersize=3, label="val (evaluation)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def draw_parameters(plt, series, key):
    """One panel per kind of parameter tensor, one line per block; key is "grad_norm" or
    "update_ratio" (drawn as log10)."""
    n = len(series)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, series.items()):
        for line, data in lines.items():
            ys = _log10(data[key]) if key == "update_ratio" else data[key]
            ax.plot(*_points(data["iter"], ys), linewidth=1, label=line)
        if key == "update_ratio":
            # The rule of thumb: updates about 1e-3 of the values.
            ax.axhline(-3, color="black", linestyle="--", linewidth=0.8)
        ax.set_title(panel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for col in range(cols):                       # the lowest panel of each column
        lowest = col + cols * ((n - 1 - col) // cols)
        axes.flat[lowest].set_xlabel("iteration", fontsize=8)
    title = ("gradient norm ||dL/dp||" if key == "grad_norm"
             else "log10 update-to-data ratio ||p_after - p_before|| / ||p_before||"
                  " (dashed: -3)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_activations(plt, stats):
    blocks = activation_series(stats)
    fig, (ax_mean, ax_std) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, data in blocks.items():
        ax_mean.plot(data["iter"], data["mean"], linewidth=1, label=name)
        ax_std.plot(data["iter"], data["std"], linewidth=1, label=name)
    for ax, what in ((ax_mean, "mean"), (ax_std, "standard deviation")):
        ax.set_title(f"block output: {what}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
