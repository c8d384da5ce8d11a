"""The notebooks of notebooks/ run top to bottom in a real Jupyter kernel (nbclient driving
ipykernel's "python3"), at the small sizes TINYGPT_NOTEBOOK_SMALL=1 selects; a cell that
raises fails the test with the notebook and the cell named. Skipped without the
`notebooks` extra (pip install -e ".[notebooks]")."""

import importlib.util
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def load_runner():
    """notebooks/run.py, the runner CI and a learner share (a script, not a package)."""
    for module in ("nbclient", "nbformat", "jupytext", "ipykernel", "matplotlib"):
        pytest.importorskip(module, reason="the notebooks extra: pip install -e \".[notebooks]\"")
    spec = importlib.util.spec_from_file_location("notebook_runner", NOTEBOOKS / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def code_cells(path):
    """The code cells of a percent-format script, as text (no jupytext needed)."""
    cells = re.split(r"^# %%.*$", path.read_text(encoding="utf-8"), flags=re.M)
    markers = re.findall(r"^# %%.*$", path.read_text(encoding="utf-8"), flags=re.M)
    return [body for marker, body in zip(markers, cells[1:]) if "[markdown]" not in marker]


def test_the_series_is_there():
    assert [p.name[:2] for p in PATHS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_small_sizes_are_chosen_in_the_first_code_cell(path):
    """The small switch is read before anything runs, so CI's sizes apply everywhere."""
    assert "TINYGPT_NOTEBOOK_SMALL" in code_cells(path)[0], path.name


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_in_a_kernel(path):
    runner = load_runner()
    try:
        nb = runner.execute(path, small=True)
    except runner.NotebookError as error:
        pytest.fail(str(error), pytrace=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "a code cell did not run"
    assert runner.figures(nb), f"{path.name} drew no figure"


def test_a_cell_that_raises_is_named(tmp_path):
    runner = load_runner()
    path = tmp_path / "99_broken.py"
    path.write_text("# %%\nx = 1\n\n# %% [markdown]\n# text\n\n"
                    "# %%\nraise ValueError('the cause')\n", encoding="utf-8")
    with pytest.raises(runner.NotebookError) as raised:
        runner.execute(path)
    message = str(raised.value)
    assert "99_broken.py" in message and "cell 2" in message and "the cause" in message


def test_the_kernel_imports_this_checkout(tmp_path):
    runner = load_runner()
    path = tmp_path / "98_where.py"
    path.write_text("# %%\nimport os, tinygpt\n"
                    "print(os.path.dirname(os.path.dirname(os.path.abspath(tinygpt.__file__))))\n"
                    "print(os.environ['TINYGPT_NOTEBOOK_SMALL'])\n", encoding="utf-8")
    nb = runner.execute(path)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).split()
    assert printed == [str(runner.ROOT), "1"]
