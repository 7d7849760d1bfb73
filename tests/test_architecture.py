"""The layout's rules, checked on the source (DEVELOPING.md, "Map"): layers import only downwards.

- ``dpa4_core`` never imports ``dpa4_flows``, jobflow, atomate2, maggma or FireWorks;
- ``dpa4_flows.execution`` (store, query engine, resumable runner) knows nothing of DPA4: it imports no other
  ``dpa4_flows`` module and from ``dpa4_core`` only the generic file helpers;
- no import cycles between modules, counting imports inside functions too;
- modules stay small: none over 350 lines, the median under 150.

Imports are read with ``ast`` (nothing is executed), so a lazy import inside a function counts like any other.
"""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dpa4_core", "dpa4_flows")
EXECUTION_MAY_IMPORT = {"dpa4_core.io.files"}
MAX_LINES, MEDIAN_LINES = 350, 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports (``from pkg import sub`` resolves to the submodule)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m.split(".")[0] in PACKAGES or m.split(".")[0] in _FOREIGN}


_FOREIGN = ("jobflow", "atomate2", "maggma", "fireworks", "jobflow_remote")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _own(target: str, known) -> str | None:
    """The module of ours that an import names (a name imported from a package resolves to the package)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_core_never_imports_flows_or_workflow_libraries(graph):
    offenders = {name: sorted(m for m in deps if not m.startswith("dpa4_core"))
                 for name, deps in graph.items() if name.startswith("dpa4_core")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_execution_layer_knows_nothing_of_dpa4(graph):
    offenders = {}
    for name, deps in graph.items():
        if not name.startswith("dpa4_flows.execution"):
            continue
        bad = [m for m in deps if m.startswith(PACKAGES)
               and not m.startswith("dpa4_flows.execution") and m not in EXECUTION_MAY_IMPORT]
        if bad:
            offenders[name] = sorted(bad)
    assert offenders == {}


def test_no_import_cycles(graph):
    known = set(graph)
    edges = {name: {own for dep in deps if (own := _own(dep, known)) and own != name} for name, deps in graph.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle of logic: drop parent -> child edges.
    edges = {name: {d for d in deps if not d.startswith(name + ".")} for name, deps in edges.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_modules_stay_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()
             if path.name != "__init__.py" or path.stat().st_size > 0}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert too_long == {}
    assert statistics.median(sizes.values()) < MEDIAN_LINES


def test_the_checker_sees_a_planted_cycle_and_a_forbidden_import(tmp_path):
    # The rules above must be able to fail: a two-module cycle and a core module importing jobflow are found.
    (tmp_path / "a.py").write_text("from dpa4_core import b\nimport jobflow\n")
    (tmp_path / "b.py").write_text("def f():\n    from dpa4_core import a\n")
    known = {"dpa4_core.a", "dpa4_core.b"}
    deps_a = _imports("dpa4_core.a", tmp_path / "a.py", known)
    deps_b = _imports("dpa4_core.b", tmp_path / "b.py", known)
    assert deps_a == {"dpa4_core.b", "jobflow"}
    assert deps_b == {"dpa4_core.a"}
