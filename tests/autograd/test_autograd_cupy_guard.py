"""A CPU-only guard for CuPy compatibility: ops and layers must reach array functions through
`xp = backend.array_module(array)`, never `numpy` itself (np.exp on a CuPy array fails or
silently copies to the host). The op and layer modules are parsed and every use of the numpy
module is checked against an allow-list of things that never touch tensor data.

A line that really does work on host data (Python lists from a user, say) says so with the
marker comment `# numpy: host data`, which exempts that line.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tinygpt"
SCANNED = (sorted((PACKAGE / "autograd" / "ops").glob("*.py"))
           + sorted((PACKAGE / "nn").glob("*.py")))

# numpy names that are safe in an op: dtypes and scalar types, constants, and functions of
# shapes or dtypes only. Anything else (np.exp, np.add.at, np.where, np.ndarray, ...) is data.
ALLOWED = {
    "dtype", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
    "bool_", "integer", "floating", "finfo", "iinfo", "result_type", "promote_types",
    "nan", "inf", "pi", "e", "newaxis",
    "prod",              # of shapes (tuples of ints)
    "broadcast_shapes",  # of shapes
    "errstate",          # which floating-point warnings NumPy prints
}
HOST_DATA_MARKER = "# numpy: host data"


def numpy_uses(source, filename="<snippet>"):
    """[(line, text)] of every use of the numpy module outside ALLOWED in `source`:
    attributes of `import numpy [as np]` and names from `from numpy import ...`, except
    on lines marked HOST_DATA_MARKER."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    aliases, imported = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.name == "numpy" or name.name.startswith("numpy."):
                    aliases.add((name.asname or name.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "numpy":
            for name in node.names:
                if name.name not in ALLOWED:
                    imported[name.asname or name.name] = name.name
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr not in ALLOWED):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in imported and isinstance(node.ctx, ast.Load):
            found.append((node.lineno, f"{node.id} (numpy.{imported[node.id]})"))
    return sorted((line, text) for line, text in found
                  if HOST_DATA_MARKER not in lines[line - 1])


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_ops_and_layers_use_the_array_module_not_numpy(path):
    uses = numpy_uses(path.read_text(), str(path))
    assert not uses, (f"{path.relative_to(REPO)} calls numpy on what may be tensor data "
                      f"(use xp = backend.array_module(array)): "
                      + ", ".join(f"line {line}: {text}" for line, text in uses))


def test_the_scan_covers_the_op_modules():
    names = {p.name for p in SCANNED}
    assert {"elementwise.py", "reduce.py", "shape.py", "matmul.py", "fused.py"} <= names


def test_only_the_backend_names_cupy():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py" and path.parent.name == "autograd":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] in ("cupy", "cupyx") for m in modules):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"CuPy imported outside autograd/backend.py: {offenders}"


# --- the checker catches what it should ---------------------------------------------------
@pytest.mark.parametrize("snippet,expected", [
    ("import numpy as np\ndef f(x):\n    return np.exp(x)\n", [(3, "np.exp")]),
    ("import numpy\ny = numpy.maximum(x, 0)\n", [(2, "numpy.maximum")]),
    ("import numpy as np\nnp.add.at(dw, idx, dy)\n", [(2, "np.add")]),
    ("from numpy import where\ny = where(m, a, b)\n", [(2, "where (numpy.where)")]),
    ("import numpy as np\nlog = np.log\ny = log(x)\n", [(2, "np.log")]),
    ("import numpy as np\nok = isinstance(x, np.ndarray)\n", [(2, "np.ndarray")]),
])
def test_checker_flags_numpy_on_data(snippet, expected):
    assert numpy_uses(snippet) == expected


def test_checker_honours_the_host_data_marker_on_its_line_only():
    snippet = ("import numpy as np\n"
               "a = np.asarray(values)  # numpy: host data (a list from the user)\n"
               "b = np.asarray(values)\n")
    assert numpy_uses(snippet) == [(3, "np.asarray")]


def test_checker_allows_the_array_module_dtypes_and_constants():
    snippet = (
        "import numpy as np\n"
        "from numpy import float32\n"
        "def f(x, xp):\n"
        "    y = xp.exp(x) * np.float32(2) + np.nan\n"
        "    n = int(np.prod(x.shape))\n"
        "    return y.astype(np.dtype(float32)), np.inf, n\n")
    assert numpy_uses(snippet) == []


def test_checker_catches_a_planted_call_in_a_real_op_module():
    source = (PACKAGE / "autograd" / "ops" / "elementwise.py").read_text()
    planted = source.replace("backend.array_module(x).exp(x)", "np.exp(x)", 1)
    assert planted != source, "the ExpOp's forward changed: update this test's anchor"
    if "import numpy as np" not in planted:
        planted = "import numpy as np\n" + planted
    assert any(text == "np.exp" for _, text in numpy_uses(planted))
