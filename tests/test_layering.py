"""Layering: no import cycle inside the package.

The graph is read from the source with ``ast``, not by importing: every ``import`` and ``from ... import``
statement of every module, at module level and inside functions (a function-level import that goes back
up the layers is still a cycle, only a delayed one), relative imports resolved. An edge goes to the module
named, or to the submodule when ``from package import name`` names one; importing ``a.b.c`` also runs
``a/__init__`` and ``a/b/__init__``, but those parent edges are left out, as Python finds a package
that is mid-import in ``sys.modules`` and no cycle comes of it. Imports made by ``importlib`` are not seen
(the package has none).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "rlhf_organic"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> its file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The package's modules that module ``name`` imports anywhere in its file -> the line of the first such import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target != name:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            assert target in modules, f"{path}:{node.lineno}: imports {target}, which is not a module of {PACKAGE}"
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                add(submodule if submodule in modules else target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module (Tarjan's
    algorithm, iterative), so that every tangle is named once, however many cycles run through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_shortest_cycle(graph, min(component), component) for component in components]


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``within`` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in within:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of more than one module always has one


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"  {a} imports {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle(s) inside {PACKAGE}:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_graph_sees_relative_function_level_and_submodule_imports():
    """The reader finds what the cycle test relies on, so that an empty result means no cycle, not a blind parser."""
    graph = import_graph()
    assert "rlhf_organic.settings" in graph["rlhf_organic.recipe"]  # from .settings import ... (module level)
    assert "rlhf_organic.settings" in graph["rlhf_organic.trust.config"]  # from ..settings import ... (level 2)
    assert "rlhf_organic.recipe" in graph["rlhf_organic.cli"]  # from .recipe import ... inside a function
    assert "rlhf_organic.simulator.text" in graph["rlhf_organic.simulator.simulate"]  # from . import text as sim_text
    assert "rlhf_organic.policy.methods.dpo" in graph["rlhf_organic.policy.methods"]  # __init__: from . import dpo
    assert graph["rlhf_organic.settings"].keys() <= {"rlhf_organic.errors"}  # a leaf: every section imports it


def test_cycles_are_found_and_named():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"f": 5}, "f": {"e": 6}, "g": {"g": 7}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert cycles({"a": {"b": 1}, "b": {}, "c": {"a": 2, "b": 3}}) == []
