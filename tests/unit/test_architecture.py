"""The package layout, checked on every run: one-way imports, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consumers", "model_store", "worker")
#: Layers, lowest first; a module may import its own layer or lower ones only.
LAYERS = [
    {"consumers", "model_store"},
    {"worker.config"},
    {"worker.learning", "worker.experiments"},
    {"worker.serving"},
    {"worker.runtime"},
    {"worker.tools"},
]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def layer(module: str) -> int:
    for k, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return k
    raise AssertionError(f"{module} belongs to no layer")


GRAPH = {name: imports(path) for name, path in modules().items()}


def test_no_import_circles():
    state: dict[str, int] = {}
    circles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for imported in sorted(GRAPH.get(node, ())):
            dep = imported if imported in GRAPH else imported.rsplit(".", 1)[0]
            if state.get(dep) == 1:
                circles.append(" -> ".join([*stack, node, dep]))
            if state.get(dep) is None and dep in GRAPH:
                visit(dep, [*stack, node])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert circles == [], f"import circles: {circles}"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down_the_layers(name):
    if name == "worker":
        return
    upward = [dep for dep in GRAPH[name] if dep != "worker" and layer(dep) > layer(name)]
    assert not upward, f"{name} imports a higher layer: {upward}"


def test_worker_holds_only_subpackages():
    loose = [p.name for p in (ROOT / "worker").glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert len((ROOT / "worker" / "__init__.py").read_text().splitlines()) <= 20


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_modules_stay_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= 320, f"{name} has {lines} lines; split it by concern"
