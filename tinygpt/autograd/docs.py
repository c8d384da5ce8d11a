"""An op's docstring read as its forward formula and its derivative (floor 2).

Docstring convention read here: the summary is the docstring's first paragraph,
`forward;  derivative` (`y = a * b;  da = dy * b,  db = dy * a.`). When the
summary has no `;`, the derivative is every later paragraph that states one (a line with
`dx = ...`, `dweight = ...`). The op reference docs/ops.md (`python tools/ops_doc.py` in a
source checkout) and `examples/backprop_walkthrough.py` print what this reads.
Imports: the standard library only.
"""

import inspect
import re

# A derivative statement: `dx =`, `dx_i =`, `dweight[idx] +=` at the start of a line or
# after a separator.
_DERIVATIVE = re.compile(r"(^|[\s(,;:])d[A-Za-z]\w*(\[[^\]]*\])? \+?= ")


def op_doc(cls):
    """Split an op's docstring: dict(summary, forward, derivative, notes).

    forward and derivative are one-line strings (derivative "" when the docstring states
    none); notes are the remaining paragraphs, each a string of lines.
    """
    doc = inspect.cleandoc(cls.__doc__ or "")
    paragraphs = [p for p in re.split(r"\n\s*\n", doc) if p.strip()]
    if not paragraphs:
        return dict(summary="", forward="", derivative="", notes=[])
    summary = " ".join(line.strip() for line in paragraphs[0].splitlines())
    notes = paragraphs[1:]
    if ";" in summary:
        forward, derivative = (part.strip() for part in summary.split(";", 1))
    else:
        forward = summary
        stated = [p for p in notes if any(_DERIVATIVE.search(line) for line in p.splitlines())]
        notes = [p for p in notes if p not in stated]
        derivative = "\n\n".join(stated)
    return dict(summary=summary, forward=forward, derivative=derivative, notes=notes)
