"""`python -m tinygpt docs`: regenerate docs/ops.md, the op reference, from the ops.

    python -m tinygpt docs                     # rewrite docs/ops.md of this source checkout
    python -m tinygpt docs --check             # exit 1 when docs/ops.md is out of date
    python -m tinygpt docs --out ref/ops.md    # write elsewhere

The text comes from `tinygpt.autograd.docs.ops_reference()`: each op's docstring, what it
saves for backward and its gradient-check case.

Where it writes: `--out`, else docs/ops.md of the source checkout tinygpt is imported from;
an installed tinygpt (not a checkout) has no default and asks for `--out`. It never
replaces a file that it did not generate itself (one that does not start as docs/ops.md
does) unless given `--force`.
"""

import sys

from pathlib import Path

from ..files import atomic_write_text
from .common import add_bool

# The first line of the generated file, and words of its first paragraph: a file with both
# is one this command wrote, and may be regenerated.
_TITLE, _SIGNATURE = "# Op reference", "by `python -m tinygpt docs`"


def default_path():
    """docs/ops.md of the source checkout this package lives in, or None when tinygpt is
    installed rather than checked out."""
    root = Path(__file__).resolve().parents[2]
    for name in ("setup.cfg", "pyproject.toml"):
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "tinygpt" in text and (root / "tinygpt" / "cli" / "docs.py").is_file():
            return root / "docs" / "ops.md"
    return None


def is_generated(path):
    """True when the file at `path` is one this command wrote (its title and signature)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2000)
    except OSError:
        return False
    return head.startswith(_TITLE + "\n") and _SIGNATURE in " ".join(head.split())


def add_arguments(parser):
    parser.add_argument("--out", default=None,
                        help="file to write (default: docs/ops.md of the source checkout)")
    add_bool(parser, "--check", "write nothing; exit 1 when the file differs from what would "
                                "be generated", default=False)
    add_bool(parser, "--force", "replace --out even when it is not a file this command "
                                "generated", default=False)


def run(args):
    from ..autograd.docs import ops_reference
    path = Path(args.out) if args.out else default_path()
    if path is None:
        raise ValueError(f"tinygpt here ({Path(__file__).resolve().parents[1]}) is installed, "
                         "not a source checkout, so there is no docs/ops.md to regenerate: "
                         "pass --out FILE to write the reference somewhere")
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
    if path.exists() and not args.force and not is_generated(path):
        raise FileExistsError(f"{path} exists and is not an op reference this command wrote; "
                              "pass --force to replace it, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Without --force, not over a file that appeared while the text was generated.
    atomic_write_text(path, text, overwrite=args.force or path.exists())
    print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0
