"""Run the notebooks of this folder top to bottom in a Jupyter kernel, as CI does.

    python notebooks/run.py                       # every notebook, small sizes
    python notebooks/run.py 03 --full             # one notebook, the sizes of a laptop
    python notebooks/run.py --out /tmp/nb         # also write each as HTML and its figures as PNG

Each notebook is a jupytext "percent" script (`NN_name.py`, cells marked `# %%`), read
into a notebook in memory and executed by nbclient in the "python3" kernel of ipykernel.
The kernel starts in a temporary folder, with this checkout first on PYTHONPATH (so it
imports the tinygpt here, installed or not) and, unless --full, TINYGPT_NOTEBOOK_SMALL=1,
which the first cell of each notebook reads to pick small sizes. A cell that raises stops
the notebook with a NotebookError naming the notebook and the cell. Needs the
`notebooks` extra: `pip install -e ".[notebooks]"`.
"""

import argparse
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL = "python3"
CELL_TIMEOUT = 600          # seconds a cell may run


class NotebookError(RuntimeError):
    """A cell of a notebook raised; the message names the notebook, the cell and the error."""


def notebook_paths(selected=()):
    """The notebooks of this folder (`NN_name.py`), in order; `selected` keeps those whose
    name starts with one of its strings ("03", "03_attention")."""
    paths = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if selected:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selected)]
    return paths


def kernel_environment(small=True):
    """The environment the kernel runs with: this checkout first on PYTHONPATH, the small
    sizes unless `small` is False."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if small:
        env["TINYGPT_NOTEBOOK_SMALL"] = "1"
    else:
        env.pop("TINYGPT_NOTEBOOK_SMALL", None)
    return env


def execute(path, small=True):
    """Execute the notebook at `path` cell by cell in a fresh kernel; returns the executed
    notebook (an nbformat NotebookNode, outputs included). Raises NotebookError naming
    the notebook, the cell (its number and first line) and the error of a cell that raised."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(path)
    with tempfile.TemporaryDirectory(prefix="tinygpt-notebook-") as cwd:
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT,
                                resources={"metadata": {"path": cwd}})
        # The kernel gets its own environment (jupyter_client's start_kernel(env=...)).
        with client.setup_kernel(env=kernel_environment(small)):
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                    raise NotebookError(
                        f"{Path(path).name}: cell {index} ({first!r}) raised:\n{error}"
                    ) from None
    return nb


def figures(nb):
    """The PNG pictures in an executed notebook's outputs, in order: (cell index, bytes)."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                found.append((index, base64.b64decode(data["image/png"])))
    return found


def write_outputs(nb, name, out_dir):
    """Write the executed notebook as out_dir/name.html and each of its figures as
    out_dir/name-cellNN-K.png; returns the paths written."""
    from nbconvert import HTMLExporter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, _ = HTMLExporter().from_notebook_node(nb)
    written = [out_dir / f"{name}.html"]
    written[0].write_text(html, encoding="utf-8")
    counts = {}
    for index, png in figures(nb):
        counts[index] = counts.get(index, 0) + 1
        path = out_dir / f"{name}-cell{index:02d}-{counts[index]}.png"
        path.write_bytes(png)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("names", nargs="*", help="notebooks to run (a prefix: 01, 03_att)")
    parser.add_argument("--full", action="store_true", help="the sizes of a laptop, not CI's")
    parser.add_argument("--out", help="folder for the HTML pages and the figures as PNG")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.names)
    if not paths:
        parser.error(f"no notebook in {HERE} starts with {' or '.join(args.names)}")
    failed = 0
    for path in paths:
        start = time.perf_counter()
        try:
            nb = execute(path, small=not args.full)
        except NotebookError as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        line = f"{path.name}: {len(nb.cells)} cells in {time.perf_counter() - start:.1f} s"
        if args.out:
            written = write_outputs(nb, path.stem, args.out)
            line += f", {len(written) - 1} figures, {written[0]}"
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
