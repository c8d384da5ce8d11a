"""The house's rules that a reader relies on: every module of the package is listed in
docs/architecture.md's table, no module is over 500 lines (split it by job), and no class
name is defined twice."""

import importlib.util
import re

from conftest import REPO

MAX_LINES = 500


def _table_tool():
    spec = importlib.util.spec_from_file_location("module_table",
                                                  REPO / "tools" / "module_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_is_in_the_architecture_table():
    tool = _table_tool()
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split(tool.START, 1)[1].split(tool.END, 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    actual = {name for name, _, _ in tool.modules()}
    assert listed == actual, (f"missing from the table: {sorted(actual - listed)}; listed but "
                              f"gone: {sorted(listed - actual)} (run python tools/module_table.py)")


def test_the_architecture_table_is_the_one_the_tool_writes(capsys):
    # every row's line count and concern too, not only the list of modules
    assert _table_tool().main(["--check"]) == 0, capsys.readouterr()


def test_the_table_tool_finds_a_stale_table(tmp_path, monkeypatch):
    tool = _table_tool()
    page = tmp_path / "architecture.md"
    page.write_text(f"# x\n\n{tool.START}\n| `tinygpt/gone.py` | 1 | gone |\n{tool.END}\n",
                    encoding="utf-8")
    monkeypatch.setattr(tool, "DOC", page)
    assert tool.main(["--check"]) == 1
    assert tool.main([]) == 0 and tool.main(["--check"]) == 0
    assert "tinygpt/gone.py" not in page.read_text(encoding="utf-8")


def test_no_module_of_the_package_is_over_500_lines():
    long = {name: lines for name, lines, _ in _table_tool().modules() if lines > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_no_class_name_is_defined_twice_in_the_package():
    """A name means one thing: the layer is nn.LayerNorm, the op it runs LayerNormOp."""
    defined = {}
    for path in sorted((REPO / "tinygpt").rglob("*.py")):
        for name in re.findall(r"^class (\w+)", path.read_text(encoding="utf-8"), re.M):
            defined.setdefault(name, []).append(path.relative_to(REPO).as_posix())
    twice = {name: paths for name, paths in defined.items() if len(paths) > 1}
    assert twice == {}, f"class names defined more than once: {twice}"
