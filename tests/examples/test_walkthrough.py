"""examples/backprop_walkthrough.py runs, names every op on its path with the derivative
from the op's docstring, its analytic and numeric gradients agree, and it writes the
graphs as DOT files."""

import re
import subprocess
import sys

import numpy as np
import pytest

from tinygpt.autograd import OPS
from tinygpt.autograd.docs import op_doc

from conftest import REPO

SCRIPT = REPO / "examples" / "backprop_walkthrough.py"
ROW = re.compile(r"analytic ([-+]\d\.\d+e[-+]\d+)\s+numeric ([-+]\d\.\d+e[-+]\d+)")


def gpt_ops():
    """The ops a tiny GPT's forward runs (whichever attention op the model uses now)."""
    import tinygpt as tg
    from tinygpt import GPT, GPTConfig
    from tinygpt.autograd import trace
    model = GPT(GPTConfig(block_size=8, vocab_size=12, n_layer=1, n_head=2, n_embd=8))
    idx = tg.zeros(2, 6, dtype=tg.int64)
    with trace() as t:
        model(idx, idx)
    return {r.op for r in t.records}


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("walkthrough")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out_dir", str(out_dir)],
                            capture_output=True, text=True, timeout=300, cwd=str(REPO))
    return result, out_dir


def test_runs_and_exits_zero(walkthrough):
    result, _ = walkthrough
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_each_op_is_shown_with_its_docstring_derivative(walkthrough):
    out = walkthrough[0].stdout
    shown = set(re.findall(r"^\[\d+\] (\w+)\(", out, flags=re.MULTILINE))
    expected = {"mul", "add", "tanh", "sum"} | gpt_ops()
    assert len(expected) > 8 and expected <= shown, expected - shown
    for name in shown:
        first_line = op_doc(OPS[name])["derivative"].strip().splitlines()[0].strip()
        assert first_line and first_line in out, name


def test_analytic_and_numeric_gradients_agree(walkthrough):
    pairs = np.array([[float(a), float(n)] for a, n in ROW.findall(walkthrough[0].stdout)])
    assert len(pairs) >= 60                   # every input of every op, and the leaves
    analytic, numeric = pairs[:, 0], pairs[:, 1]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(analytic).max() > 0.1       # not a table of zeros


def test_writes_the_graphs(walkthrough):
    result, out_dir = walkthrough
    for name in ("expression", "gpt"):
        path = out_dir / f"{name}.dot"
        assert str(path) in result.stdout
        text = path.read_text()
        assert text.startswith("digraph") and text.count("{") == text.count("}")
        assert "->" in text
    gpt = (out_dir / "gpt.dot").read_text()
    assert "transformer.h.0" in gpt          # grouped by module: one cluster per block
