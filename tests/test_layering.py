"""Layering: no import cycle inside the package, and the rules that keep the folders' architecture true
(what may import the simulator, the evaluation package and the shared sequence code; no private names
across packages).

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


def import_target(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The dotted module a ``from ... import`` statement of module ``name`` (file ``path``) reads from."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The package's modules that module ``name`` imports anywhere in its file -> the line of the first such import."""
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
            target = import_target(name, path, node)
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


# ---- the rules that keep the architecture the folders show ---------------------------------------

ENTRY_POINTS = {"rlhf_organic.cli", "rlhf_organic.pipeline", "rlhf_organic.recipe"}  # they wire the stages together


def section_of(module: str) -> str:
    """The package's top-level part a module belongs to: ``rlhf_organic.reward.model`` -> ``rlhf_organic.reward``."""
    return ".".join(module.split(".")[:2])


def importers(graph: dict[str, dict[str, int]], prefix: str) -> dict[str, set[str]]:
    """Module -> the modules under ``prefix`` it imports, for every module outside ``prefix``."""
    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        if name == prefix or name.startswith(prefix + "."):
            continue
        hit = {t for t in targets if t == prefix or t.startswith(prefix + ".")}
        if hit:
            out[name] = hit
    return out


def test_only_the_entry_points_run_the_simulator():
    """Ingest, trust, reward, policy and evaluation read a simulation folder through its file contract
    (``simulator.ground_truth``) and never import the generator: the simulator is a source of logs like
    any other, and training would run the same on real logs."""
    graph = import_graph()
    wrong = {name: sorted(hit - {"rlhf_organic.simulator.ground_truth"})
             for name, hit in importers(graph, "rlhf_organic.simulator").items() if name not in ENTRY_POINTS}
    wrong = {name: hit for name, hit in wrong.items() if hit}
    assert not wrong, f"only {sorted(ENTRY_POINTS)} may import the simulator beyond simulator.ground_truth: {wrong}"
    assert graph["rlhf_organic.simulator.ground_truth"] == {}  # the contract is a leaf


def test_training_code_does_not_import_the_evaluation():
    """Evaluation reads what training wrote, never the other way: only the entry points, the policy stage
    (which evaluates once training is done) and the report import ``evaluation``."""
    allowed = ENTRY_POINTS | {"rlhf_organic.policy.stage", "rlhf_organic.reporting.run"}
    found = importers(import_graph(), "rlhf_organic.evaluation")
    wrong = {name: sorted(hit) for name, hit in found.items() if name not in allowed}
    assert not wrong, f"modules that must not import rlhf_organic.evaluation: {wrong}"
    assert "rlhf_organic.policy.stage" in found  # the rule sees the function-level imports it is about


def test_ingest_and_the_data_package_stay_below_the_stages():
    """``data`` (readers, ingest, privacy) is the bottom stage: it imports no stage above it."""
    above = ("rlhf_organic.trust", "rlhf_organic.reward", "rlhf_organic.policy", "rlhf_organic.evaluation",
             "rlhf_organic.simulator", "rlhf_organic.pipeline", "rlhf_organic.reporting")
    graph = import_graph()
    wrong = {name: sorted(t for t in targets if section_of(t) in above)
             for name, targets in graph.items() if section_of(name) == "rlhf_organic.data"}
    wrong = {name: hit for name, hit in wrong.items() if hit}
    assert not wrong, f"data/ imports from the stages above it: {wrong}"


def test_the_shared_sequence_code_depends_on_no_stage():
    """Reward, policy and evaluation share ``sequences`` (padding, dialogue formatting, the held-out split):
    it must not import any of them back, and none of them takes those from another stage."""
    graph = import_graph()
    assert set(graph["rlhf_organic.sequences"]) <= {"rlhf_organic.models.tiny"}
    shared = {"batch_sequences", "pad_left", "pad_right", "format_dialogue", "prompt_text", "held_out", "cut_left"}
    modules = package_modules()
    wrong = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and import_target(name, path, node) != "rlhf_organic.sequences":
                taken = shared & {a.name for a in node.names}
                if taken and import_target(name, path, node).startswith(PACKAGE):
                    wrong.append(f"{name}:{node.lineno} takes {sorted(taken)} from {import_target(name, path, node)}")
    assert not wrong, "import the shared sequence code from rlhf_organic.sequences:\n" + "\n".join(wrong)


def test_no_module_imports_another_packages_private_names():
    """A ``_name`` is private to its package (``rlhf_organic.reward``, ``rlhf_organic.settings``, ...): what
    another package needs is made public where it belongs, not reached into."""
    wrong = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = import_target(name, path, node)
            if not target.startswith(PACKAGE) or section_of(target) == section_of(name):
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                wrong.append(f"{name}:{node.lineno} imports {private} from {target}")
    assert not wrong, "private names imported across packages:\n" + "\n".join(wrong)
