"""bench/ sits beside the package: runnable from the repository root as `python -m bench`,
never imported by tinygpt, and left out of what `pip install` installs."""

import ast
import configparser
import os
import subprocess
import sys

from conftest import REPO


def imported_modules(path):
    """The top-level names of the modules a source file imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {n.name.split(".")[0] for n in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_in_the_package_imports_bench_or_tools():
    sources = sorted((REPO / "tinygpt").rglob("*.py"))
    assert len(sources) > 50
    bad = [str(p.relative_to(REPO)) for p in sources
           if imported_modules(p) & {"bench", "tools"}]
    assert bad == []


def test_the_check_sees_an_import_of_bench(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nfrom bench.train import CONFIGS\n", encoding="utf-8")
    assert "bench" in imported_modules(path)


def test_bench_is_not_an_installed_package():
    setuptools = __import__("pytest").importorskip("setuptools")
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    include = cfg["options.packages.find"]["include"].split()
    found = setuptools.find_packages(str(REPO), include=include)
    assert "tinygpt" in found and "tinygpt.autograd" in found
    assert not [name for name in found if name.split(".")[0] in ("bench", "tools", "tests")]


def test_python_m_bench_runs_from_the_repository_root():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m bench NAME")
    assert "parallel" in done.stdout
