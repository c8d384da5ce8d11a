"""The floors of docs/architecture.md hold: each package of tinygpt imports only what the
table there allows, read off every `import` in the source."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinygpt"

# package -> the packages of tinygpt it may import (docs/architecture.md, "Who imports whom")
ALLOWED = {
    "cli": {"train", "model", "data", "autograd", "autograd/fast", "files"},
    "train": {"model", "nn", "optim", "data", "autograd", "autograd/fast"},
    "model": {"nn", "data", "autograd", "files"},
    "optim": {"autograd", "autograd/fast"},
    "data": {"autograd", "files"},
    "nn": {"autograd", "autograd/ops"},
    "autograd/fast": {"autograd/ops", "autograd", "backend"},
    "autograd/ops": {"autograd", "backend"},
    "autograd": {"backend", "autograd/ops", "autograd/fast"},
    "backend": set(),
    "files": set(),
    "memory": set(),
}
# Standard-library helpers any floor may import (files written safely, memory sizes).
ANYWHERE = {"files", "memory"}


def package_of(module):
    """tinygpt.autograd.fast.threads -> 'autograd/fast'; tinygpt.autograd.backend ->
    'backend'; tinygpt.model.gpt -> 'model'; None for what no floor holds (bench, the
    top-level __init__ and __main__)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[0] == "autograd":
        if len(parts) > 1 and parts[1] in ("backend", "erf", "splitmix"):
            return "backend"
        if len(parts) > 1 and parts[1] in ("ops", "fast"):
            return "autograd/" + parts[1]
        return "autograd"
    return parts[0] if parts[0] in ALLOWED else None


def imports(path):
    """The tinygpt modules a source file imports."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if path.name == "__init__.py":
        here = here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [n.name for n in node.names if n.name.startswith("tinygpt")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found += [target + "." + n.name if not node.module else target
                          for n in node.names]
            elif (node.module or "").startswith("tinygpt"):
                found.append(node.module)
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if package_of(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) is not None)


def violations(module, targets):
    """The imports of `module` (a dotted name) among `targets` that its floor forbids."""
    own = package_of(module)
    bad = []
    for target in targets:
        other = package_of(target)
        if target == "tinygpt":                  # the whole public API: the CLI's to use
            allowed = own == "cli"
        elif other is None:                      # bench, __main__: nothing may import them
            allowed = False
        else:
            allowed = other == own or other in ALLOWED[own] or other in ANYWHERE
        if not allowed:
            bad.append(f"{module} ({own}) imports {target} ({other})")
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_from_the_floors_it_may(path):
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    assert violations(module, imports(path)) == []


def test_the_check_flags_imports_from_above():
    assert violations("tinygpt.autograd.ops.fused", ["tinygpt.nn.functional"])
    assert violations("tinygpt.autograd.ops.fused", ["tinygpt.autograd.fast.threads"])
    assert violations("tinygpt.nn.layers", ["tinygpt.model.gpt"])
    assert violations("tinygpt.model.gpt", ["tinygpt.cli.train"])
    assert violations("tinygpt.train.trainer", ["tinygpt.bench.train"])
    assert violations("tinygpt.autograd.fast.gelu", ["tinygpt.autograd.ops.fused"]) == []
