"""The packages import each other in one direction: no cycle between packages.

Every ``import`` of every module counts, also those inside functions (a lazy import is still a
dependency) and those for type checking. A node is a package, ``kdlang.<name>`` on the language side
and ``kdlang.runtime.<name>`` in the runtime, whose top-level modules are each a node of their
own (the executor runs the stages, which read the context). ``__main__`` modules are entry
points, which nothing imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"kdlang": ROOT / "kdlang", "kdlang.runtime": ROOT / "runtime"}


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in TREES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def _package(module: str, modules: dict[str, Path]) -> str | None:
    """The package a module belongs to, for the graph (None: outside kdlang)."""
    parts = module.split(".")
    if parts[0] != "kdlang":
        return None
    depth = 3 if parts[1:2] == ["runtime"] else 2
    name = ".".join(parts[:depth])
    if name in modules and modules[name].name != "__init__.py" and depth == 2:
        return "kdlang"  # a top-level module of kdlang (its version)
    return name


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.add(target)
            out |= {f"{target}.{alias.name}" for alias in node.names}
    return out


def graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        source = _package(module, modules)
        for target in _imports(module, path):
            if target not in modules:
                continue
            to = _package(target, modules)
            if to is not None and source is not None and to != source:
                edges.setdefault(source, set()).add(to)
    return edges


def test_the_package_graph_is_acyclic():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycles.append([*path[path.index(node) :], node])
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        visit(node, [])
    assert cycles == []


def test_the_language_side_depends_on_the_layers_below_it_only():
    edges = graph()
    # the IR's node classes know nothing of lowering, checking, planning or the runtime
    assert not edges.get("kdlang.ir", set()) & {
        "kdlang.lower",
        "kdlang.expr",
        "kdlang.check",
        "kdlang.plan",
        "kdlang.cli",
        "kdlang.runtime",
    }
    assert "kdlang.ir" in edges["kdlang.lower"] and "kdlang.expr" in edges["kdlang.lower"]
    for package in ("kdlang.syntax", "kdlang.ir", "kdlang.expr", "kdlang.check", "kdlang.plan"):
        assert not any(p.startswith("kdlang.runtime") for p in edges.get(package, ())), package
