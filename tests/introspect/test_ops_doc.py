"""docs/ops.md: generated from the ops' docstrings and checks by tools/ops_doc.py, and kept
up to date."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from tinygpt.autograd import OPS, Function
from tinygpt.autograd.docs import op_doc
from tinygpt.cli import main as tinygpt_main
from tools.ops_doc import default_path, main, ops_reference, probe_case


def test_committed_ops_md_is_up_to_date():
    path = REPO / "docs" / "ops.md"
    assert path.is_file(), "docs/ops.md is missing: run `python tools/ops_doc.py`"
    assert path.read_text(encoding="utf-8") == ops_reference(), (
        "docs/ops.md is out of date: run `python tools/ops_doc.py` and commit the result")


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_states_its_forward_and_derivative(name):
    doc = op_doc(OPS[name])
    assert doc["forward"], f"op {name!r}: the docstring's first line should give the forward"
    assert doc["derivative"], (
        f"op {name!r}: the docstring states no derivative: write `forward;  dx = ...` on its "
        "first line, or a paragraph with `dx = ...`")


def test_every_op_has_a_section():
    text = ops_reference()
    for name in OPS:
        assert text.count(f"\n### `{name}`\n") == 1, name
        assert f"[`{name}`](#{name})" in text


class WithSummary(Function):
    """y = a * b + c;  da = dy * b,  db = dy * a,  dc = dy.

    A note with a_b and 2 * 3.

        an indented formula
    """


class WithBody(Function):
    """Something fused: y = f(x).

    What it is for.

    dx = dy * f'(x)
    dw = sum of dy over rows.

    Saves x.
    """


class Undocumented(Function):
    pass


def test_op_doc_reads_both_docstring_forms():
    doc = op_doc(WithSummary)
    assert doc["forward"] == "y = a * b + c"
    assert doc["derivative"] == "da = dy * b,  db = dy * a,  dc = dy."
    assert len(doc["notes"]) == 2
    doc = op_doc(WithBody)
    assert doc["forward"] == "Something fused: y = f(x)."
    assert doc["derivative"] == "dx = dy * f'(x)\ndw = sum of dy over rows."
    assert doc["notes"] == ["What it is for.", "Saves x."]
    assert op_doc(Undocumented) == dict(summary="", forward="", derivative="", notes=[])


class SavesEverything(Function):
    """y = 2 x;  dx = 2 dy."""

    @staticmethod
    def forward(ctx, x, factor):
        y = x * factor
        ctx.save(x, y, x[0], x + 1.0, None)
        ctx.factor = factor
        return y

    @staticmethod
    def backward(ctx, dy):
        return (dy * ctx.factor,)


def test_probe_describes_what_forward_saves(throwaway_ops):
    from tinygpt.autograd.checks import normal

    def case(rng, shapes=None):
        return (lambda x: SavesEverything.apply(x.exp(), factor=2.0)), [normal(rng, (3, 2))]

    throwaway_ops("saves_everything", SavesEverything, case)
    described = probe_case("saves_everything")
    assert described["inputs"] == [((3, 2), "float64", True)]
    assert described["params"] == ["factor"]
    assert described["saved"] == ["input 0 (3, 2)", "the output (3, 2)", "a view of input 0 (2,)",
                                  "a new (3, 2) float64 array", "None"]
    assert described["attributes"] == ["factor"]
    text = ops_reference()
    assert "### `saves_everything`" in text
    assert "(first call, `saves_everything(factor)`): input 0 (3, 2), the output (3, 2)" in text


def test_op_without_a_case_is_marked(throwaway_ops):
    throwaway_ops("undocumented_op", Undocumented)
    assert probe_case("undocumented_op") is None
    text = ops_reference()
    section = text.split("### `undocumented_op`")[1]
    assert "not stated in the docstring" in section
    assert "no gradient-check case" in section


def test_tool_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "docs" / "ops.md"
    assert main(["--out", str(out), "--check"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == ops_reference()
    assert main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("y = a * b", "y = a + b"),
                   encoding="utf-8")
    assert main(["--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["ops.md"]   # no temporary left


def test_tool_replaces_only_a_file_it_wrote(tmp_path, capsys):
    out = tmp_path / "ops.md"
    out.write_text("# My notes\n", encoding="utf-8")
    assert main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is not an op reference this tool wrote" in err and "--force" in err
    assert out.read_text(encoding="utf-8") == "# My notes\n"
    assert main(["--out", str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8") == ops_reference()
    assert main(["--out", str(out)]) == 0                  # its own file: replaced freely


def test_tool_runs_as_a_script_from_any_folder(tmp_path):
    """`python tools/ops_doc.py` imports the tinygpt of its own checkout, whatever the working
    folder and PYTHONPATH; --check on the committed file succeeds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "ops_doc.py"), "--check"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "is up to date" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_tool_refuses_an_abbreviated_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--ou", "x.md"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --ou" in err
    assert len(err.strip().splitlines()) == 1


def test_tinygpt_has_no_docs_command(capsys):
    with pytest.raises(SystemExit) as e:
        tinygpt_main(["docs"])
    assert e.value.code == 2
    assert "unknown command 'docs'" in capsys.readouterr().err


def test_default_path_is_the_checkout_docs_folder():
    assert default_path() == REPO / "docs" / "ops.md"


def test_probe_restores_the_tracer():
    from tinygpt.autograd.function import get_tracer
    probe_case("add")
    assert get_tracer() is None
    assert np.isfinite(len(probe_case("add")["saved"]))
