"""`python -m tinygpt docs`: regenerate docs/ops.md, the op reference, from the ops.

    python -m tinygpt docs             # rewrite docs/ops.md
    python -m tinygpt docs --check     # exit 1 when docs/ops.md is out of date

The text comes from `tinygpt.autograd.docs.ops_reference()`: each op's docstring, what it
saves for backward and its gradient-check case.
"""

import sys

from pathlib import Path

from ..files import atomic_write_text


def default_path():
    """docs/ops.md of the source checkout this package lives in, else of the current folder."""
    root = Path(__file__).resolve().parents[2]
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root / "docs" / "ops.md"
    return Path("docs") / "ops.md"


def add_arguments(parser):
    parser.add_argument("--out", default=None,
                        help="file to write (default: docs/ops.md of the source checkout)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file differs from what would be "
                             "generated")


def run(args):
    from ..autograd.docs import ops_reference
    path = Path(args.out) if args.out else default_path()
    text = ops_reference()
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"docs: {path} does not exist; run `python -m tinygpt docs` to write it",
                  file=sys.stderr)
            return 1
        if current != text:
            print(f"docs: {path} is out of date; run `python -m tinygpt docs` to regenerate it",
                  file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0
