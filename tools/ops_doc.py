"""Regenerate docs/ops.md, the op reference, from the ops themselves.

    python tools/ops_doc.py                     # rewrite docs/ops.md of this checkout
    python tools/ops_doc.py --check             # exit 1 when docs/ops.md is out of date
    python tools/ops_doc.py --out ref/ops.md    # write elsewhere

For every registered op: its forward formula and its derivative, read from the op class's
docstring (`tinygpt.autograd.docs.op_doc`); what its forward keeps for backward, measured
by running the first call of its gradient-check case under a probing tracer; and that
case's input shapes. A test fails when the committed file differs from what this writes.

Where it writes: `--out`, else docs/ops.md of the source checkout this file lives in (the
tinygpt documented is that checkout's, whatever else is installed). It never replaces a
file that it did not generate itself (one that does not start as docs/ops.md does) unless
given `--force`. Errors are one line on stderr with exit status 1, as tinygpt's commands'.
A tool beside the package: nothing in tinygpt imports it.
"""

import inspect
import re
import sys
from pathlib import Path

# The checkout this file belongs to: its tinygpt is the one documented.
ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "tinygpt" / "__init__.py").is_file() and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tinygpt.autograd import backend  # noqa: E402
from tinygpt.autograd.docs import op_doc  # noqa: E402
from tinygpt.autograd.function import OPS, get_tracer, set_tracer, use_reference_ops  # noqa: E402
from tinygpt.cli.common import Parser, add_bool, run_command  # noqa: E402
from tinygpt.files import atomic_write_text  # noqa: E402

HEADER = """\
# Op reference

Every differentiable op of tinygpt's autograd engine: its forward, its derivative, what it
keeps for backward, its gradient check, and the fast kernels that compute it faster on a
device (each tested equal to the op; `tg.use_reference_ops()` runs the ops as documented
here everywhere). Generated from the op classes' docstrings and the
gradient-check cases (`tinygpt/autograd/checks.py`) by `python tools/ops_doc.py`; do not edit
by hand (`python tools/ops_doc.py --check` exits 1 when this file is out of date).

Notation: `dy` is the gradient of the final scalar L with respect to the op's output, dL/dy;
`dx`, `da`, `dw` are dL/dx, dL/da, dL/dw for its inputs. Binary ops broadcast, and each input's
gradient is summed back to its shape. "Saves" lists what the first call of the op's
gradient-check case kept on its ctx (float64 inputs): `input i` is that input's own array (no
copy), `the output` the array returned, a new array something forward computed.
`python -m tinygpt gradcheck` runs every check below on fresh random inputs.
"""

class _Probe:
    """A tracer that runs each op as usual and keeps (op class, ctx, input arrays, output)."""

    def __init__(self):
        self.calls = []

    def forward(self, cls, ctx, inputs, params):
        arrays = [t.data for t in inputs]
        out = cls.forward(ctx, *arrays, **params)
        self.calls.append((cls, ctx, arrays, out, sorted(params)))
        return out

    def backward(self, ctx, dy):
        return ctx.backward(ctx, dy)


def probe_case(name, seed=0):
    """Run op `name`'s gradient-check case forward and describe its first call:
    dict(inputs=[(shape, dtype, requires_grad)], params=[names], saved=[text],
    attributes=[text]); None when the op has no case."""
    from tinygpt.autograd.checks import CASES
    if name not in CASES:
        return None
    fn, inputs = CASES[name](np.random.default_rng(seed))
    probe = _Probe()
    previous = get_tracer()
    rng_state = backend.get_rng_state()        # dropout cases reseed the global generator
    set_tracer(probe)
    try:
        with use_reference_ops():              # what the reference keeps, the code documented
            fn(*inputs)
    finally:
        set_tracer(previous)
        backend.set_rng_state(rng_state)
    described = dict(inputs=[(tuple(t.shape), str(t.dtype), t.requires_grad) for t in inputs],
                     params=None, saved=None, attributes=None)
    first = next((call for call in probe.calls if call[0] is OPS[name]), None)
    if first is None:
        return described
    _, ctx, arrays, out, params = first
    saved = getattr(ctx, "saved", None) or ()
    described["params"] = params
    described["saved"] = [_describe_array(a, arrays, out) for a in saved]
    described["attributes"] = [
        f"{key} ({_describe_array(value, arrays, out)})" if _is_array(value) else key
        for key, value in sorted(vars(ctx).items())]
    return described


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(
        value, np.generic)


def _describe_array(a, inputs, out):
    if a is None:
        return "None"
    if not _is_array(a):
        return type(a).__name__
    shape = _shape(a.shape)
    if a is out:
        return f"the output {shape}"
    xp = backend.array_module(a)
    for i, x in enumerate(inputs):
        if a is x:
            return f"input {i} {shape}"
    for i, x in enumerate(inputs):
        if _is_array(x) and type(x) is type(a) and xp.shares_memory(a, x):
            return f"a view of input {i} {shape}"
    if _is_array(out) and type(out) is type(a) and xp.shares_memory(a, out):
        return f"a view of the output {shape}"
    return f"a new {shape} {a.dtype} array"


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _code(text):
    """A Markdown code span for one line of text (backticks inside are dropped)."""
    return "`" + " ".join(text.replace("`", "").split()) + "`"


def _prose(paragraph):
    """A docstring paragraph as Markdown: an indented block stays a code block; other
    text keeps its `code` spans and has *, _ and [ escaped outside them."""
    lines = paragraph.splitlines()
    if all(line.startswith("    ") or not line.strip() for line in lines):
        return "```text\n" + inspect.cleandoc(paragraph) + "\n```"
    if any(line.startswith("    ") for line in lines):
        return "```text\n" + paragraph + "\n```"
    text = " ".join(line.strip() for line in lines)
    parts = text.split("`")
    for i in range(0, len(parts), 2):                       # outside code spans
        parts[i] = re.sub(r"([\\*_\[\]<>|])", r"\\\1", parts[i])
    return "`".join(parts)


def _family(module):
    return module.rsplit(".", 1)[-1]


def ops_reference():
    """The text of docs/ops.md for the ops registered now."""
    from tinygpt.autograd.checks import GRADCHECK_OPTIONS
    families = {}
    for name, cls in OPS.items():
        families.setdefault(cls.__module__, []).append(name)

    out = [HEADER, "## Contents\n"]
    out.append("| family | ops |")
    out.append("| --- | --- |")
    for module, names in families.items():
        out.append(f"| [`{_family(module)}`](#family-{_family(module).lower()}) | "
                   + ", ".join(f"[`{n}`](#{n})" for n in names) + " |")
    out.append("")
    for module, names in families.items():
        path = module.replace(".", "/") + ".py"
        out.append(f"## Family `{_family(module)}`\n")
        doc = inspect.getdoc(sys.modules[module]) or ""
        first = doc.split("\n\n")[0] if doc else ""
        out.append(f"`{path}`" + (f": {_prose(first)}" if first else "") + "\n")
        for name in names:
            out.append(_op_section(name, OPS[name], GRADCHECK_OPTIONS.get(name)))
    return "\n".join(out).rstrip() + "\n"


def _op_section(name, cls, options):
    doc = op_doc(cls)
    lines = [f"### `{name}`\n"]
    lines.append(f"- **Class:** `{cls.__name__}`")
    for device, kernel in sorted((cls.kernels or {}).items()):
        path = kernel.__module__.replace(".", "/") + ".py"
        lines.append(f"- **Fast kernel ({device}):** `{kernel.__name__}` in `{path}`")
    lines.append(f"- **Forward:** {_code(doc['forward'])}")
    if not doc["derivative"]:
        lines.append("- **Derivative:** not stated in the docstring")
    elif "\n" in doc["derivative"] or len(doc["derivative"]) > 100:
        lines.append("- **Derivative:**\n")
        lines.append("  ```text")
        lines += ["  " + line if line.strip() else ""
                  for line in inspect.cleandoc(doc["derivative"]).splitlines()]
        lines.append("  ```")
    else:
        lines.append(f"- **Derivative:** {_code(doc['derivative'])}")
    case = probe_case(name)
    if case is None:
        lines.append("- **Saves:** unknown (no gradient-check case)")
        lines.append("- **Gradient check:** none: `python -m tinygpt gradcheck` fails for this op")
    else:
        if case["saved"] is None:
            lines.append("- **Saves:** unknown (its gradient-check case never calls it)")
        else:
            call = f"{name}({', '.join(case['params'])})" if case["params"] else f"{name}()"
            saved = ", ".join(case["saved"]) or "no arrays"
            kept = (f"; also keeps `{'`, `'.join(case['attributes'])}`"
                    if case["attributes"] else "")
            lines.append(f"- **Saves** (first call, `{call}`): {saved}{kept}")
        from tinygpt.autograd.checks import CASES
        summary = inspect.getdoc(CASES[name])
        shapes = ", ".join(
            f"{_shape(s)} {dtype}" + (" (checked)" if grad else "")
            for s, dtype, grad in case["inputs"])
        extra = (" with " + ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
                 if options else "")
        lines.append(f"- **Gradient check**{extra}: inputs {shapes}"
                     + (f". {_prose(summary)}" if summary else ""))
    lines.append("")
    lines += [_prose(p) + "\n" for p in doc["notes"]]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------
# The first line of the generated file, and words of its first paragraph: a file with both
# is one this tool wrote, and may be regenerated.
_TITLE = "# Op reference"
_SIGNATURES = ("by `python tools/ops_doc.py`",)


def default_path():
    """docs/ops.md of the source checkout this file lives in, or None when it lives
    elsewhere (no tinygpt package and setup file beside it)."""
    for name in ("setup.cfg", "pyproject.toml"):
        try:
            text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "tinygpt" in text and (ROOT / "tinygpt" / "__init__.py").is_file():
            return ROOT / "docs" / "ops.md"
    return None


def is_generated(path):
    """True when the file at `path` is one this tool wrote (its title and signature)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2000)
    except OSError:
        return False
    words = " ".join(head.split())
    return head.startswith(_TITLE + "\n") and any(s in words for s in _SIGNATURES)


def build_parser():
    parser = Parser(prog="python tools/ops_doc.py",
                    description="Regenerate docs/ops.md from the ops' docstrings and checks.")
    parser.add_argument("--out", default=None,
                        help="file to write (default: docs/ops.md of this source checkout)")
    add_bool(parser, "--check", "write nothing; exit 1 when the file differs from what would "
                                "be generated", default=False)
    add_bool(parser, "--force", "replace --out even when it is not a file this tool "
                                "generated", default=False)
    return parser


def run(args):
    path = Path(args.out) if args.out else default_path()
    if path is None:
        raise ValueError(f"{Path(__file__).resolve()} is not in a tinygpt source checkout, so "
                         "there is no docs/ops.md to regenerate: pass --out FILE to write the "
                         "reference somewhere")
    text = ops_reference()
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"ops_doc: {path} does not exist; run `python tools/ops_doc.py` to write it",
                  file=sys.stderr)
            return 1
        if current != text:
            print(f"ops_doc: {path} is out of date; run `python tools/ops_doc.py` to "
                  "regenerate it", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if path.exists() and not args.force and not is_generated(path):
        raise FileExistsError(f"{path} exists and is not an op reference this tool wrote; "
                              "pass --force to replace it, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Without --force, not over a file that appeared while the text was generated.
    atomic_write_text(path, text, overwrite=args.force or path.exists())
    print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_command(run, args, name="ops_doc")


if __name__ == "__main__":
    sys.exit(main())
