"""The shape of the package: no import cycles, and the layers point one way.

Imports are read from the source (module level and inside functions alike), so a cycle
hidden in a late import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convosyncd"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from its first module)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = imports()
    assert "convosyncd.sync.cycle" in graph, "the import reader found the package"
    # A package's __init__ re-exporting its own modules is not a cycle of the design.
    for name in list(graph):
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and t in graph)}
    assert cycles(graph) == []


def test_lower_layers_never_import_the_command_layer() -> None:
    upper = ("convosyncd.commands", "convosyncd.cli", "convosyncd.__main__")
    offenders = {
        name: sorted(t for t in targets if t.startswith("convosyncd.commands"))
        for name, targets in imports().items()
        if not name.startswith(upper)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_cycle_reader_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
