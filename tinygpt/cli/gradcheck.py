"""`python -m tinygpt gradcheck`: gradient-check every registered op and print a table.

Each op's case from `tinygpt.autograd.checks` runs on fresh random float64 inputs: its
analytic gradients (backward) are compared with central differences. The exit status
is 1 when any op fails, including a registered op that has no case ("no gradient check").

    python -m tinygpt gradcheck                     # every op, a fresh seed (printed)
    python -m tinygpt gradcheck --ops softmax,gelu --seed 3
"""

import math
import os
import sys
import zlib

import numpy as np

from .common import add_bool


def add_arguments(parser):
    parser.add_argument("--ops", default=None,
                        help="comma-separated op names to check (default: every registered op)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random inputs (default: a fresh one, printed so a "
                             "failure can be reproduced)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_bool(parser, "--verbose", "print the full message of each failure (default: its first "
                                  "line)")


def op_rng(seed, name):
    """The generator for op `name`: derived from the seed and the name, so that one op
    gets the same inputs whether it runs alone (--ops) or with all the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def check_ops(names, seed, device="cpu"):
    """One `run_check` report per name; a name without a case is reported as failed."""
    from ..autograd.checks import CASES, run_check
    reports = []
    for name in names:
        if name in CASES:
            reports.append(run_check(name, op_rng(seed, name), device=device))
        else:
            reports.append(dict(op=name, shapes=None, max_abs_err=float("nan"),
                                max_rel_err=float("nan"), passed=False,
                                error="no gradient check: add a case for this op to "
                                      "CASES in tinygpt/autograd/checks.py"))
    return reports


def format_table(reports, verbose=False):
    """The reports as a text table (op, shapes, errors, result), failures explained below."""
    rows = [("op", "input shapes", "max abs err", "max rel err", "result")]
    for r in reports:
        result = "pass" if r["passed"] else (
            "no gradient check" if r["error"] and r["error"].startswith("no gradient check")
            else "FAIL")
        rows.append((r["op"], _shapes(r["shapes"]), _number(r["max_abs_err"]),
                     _number(r["max_rel_err"]), result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                 row[3].rjust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    failed = [r for r in reports if not r["passed"]]
    for r in failed:
        message = r["error"] or "gradcheck returned False"
        if not verbose:
            message = message.strip().splitlines()[0]
        lines.append(f"\n{r['op']}: {message}")
    return "\n".join(lines)


def _shapes(shapes):
    if shapes is None:
        return "-"
    return " ".join(str(tuple(s)).replace(" ", "") for s in shapes)


def _number(x):
    return "-" if math.isnan(x) else f"{x:.1e}"    # NaN: the check never got that far


def run(args):
    from ..autograd import OPS
    names = list(OPS)
    if args.ops:
        names = [n.strip() for n in args.ops.split(",") if n.strip()]
        unknown = [n for n in names if n not in OPS]
        if unknown:
            print(f"gradcheck: unknown op(s) {', '.join(map(repr, unknown))}; registered ops: "
                  f"{', '.join(OPS)}", file=sys.stderr)
            return 2
    from ..autograd import backend
    try:
        device = backend.normalize_device(args.device)
        backend.array_module_for_device(device)
    except (RuntimeError, ValueError) as e:
        print(f"gradcheck: {e}", file=sys.stderr)
        return 2
    seed = args.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    reports = check_ops(names, seed, device=device)
    print(f"gradient check of {len(reports)} op(s) on {device}, float64, seed {seed}")
    print(format_table(reports, verbose=args.verbose))
    failed = sum(not r["passed"] for r in reports)
    print(f"\n{len(reports) - failed} passed, {failed} failed"
          + (f" (reproduce with --seed {seed})" if failed else ""))
    return 1 if failed else 0
