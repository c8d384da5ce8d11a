"""Write the table of tinygpt's modules into docs/architecture.md: each module of the
package, its lines and its one concern (the first sentence of its docstring, without the
floor), between the markers `<!-- modules -->` and `<!-- /modules -->`.

    python tools/module_table.py            # rewrite the table in docs/architecture.md
    python tools/module_table.py --check    # exit 1 when the table is out of date

Run from anywhere; it reads the tinygpt/ beside this file. Imports: the standard library.
"""

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinygpt"
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- modules -->", "<!-- /modules -->"


def concern(path):
    """The first sentence of the module's docstring, its "(floor N...)" dropped."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split("\n\n")[0].split())        # the first paragraph only
    match = re.match(r"(.+?[.:])(\s+[A-Z`(\"']|$)", text)
    sentence = match.group(1) if match else text
    sentence = re.sub(r"\s*\((?:floor|floors) [^)]*\)", "", sentence).rstrip(".:")
    return sentence.replace("|", "\\|")


def modules():
    """[(relative path, lines, concern)] for every module of the package, sorted by path."""
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        rows.append((path.relative_to(ROOT).as_posix(), lines, concern(path)))
    return rows


def table():
    out = [START, "", "| module | lines | its one concern |", "| --- | ---: | --- |"]
    out += [f"| `{name}` | {lines} | {text} |" for name, lines, text in modules()]
    return "\n".join(out + ["", END])


def updated(text):
    """`text` (the page) with its table replaced by the current one."""
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + table() + tail


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the table in docs/architecture.md is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python tools/module_table.py", file=sys.stderr)
            return 1
        print(f"{DOC} is up to date")
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
    print(f"wrote the module table of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
