"""The package's import graph: no cycle, and core never reaches into the embedded world.

Every module of the package is parsed with ``ast`` — imports inside functions included, those under
``if TYPE_CHECKING:`` left out (they never run) — and relative imports are resolved. The installed
names map to the top-level folders (``immunobench.defenses`` → ``defenses/``, see pyproject's
``package-dir``). An import hidden in a function is still a dependency: a cycle through one works
only as long as nobody moves the import up.

Core (``immunobench/*.py``, ``defenses/``, ``attacks/``, ``leaderboard/``) reaches the world only
through the registries: the tiny-sd backbone and the ``*-world`` metric plugins in ``metrics/`` are
registry entries and may use ``immunobench.world``; core code asks the registry for them by name.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {  # pyproject.toml [tool.setuptools.package-dir]
    "immunobench": ROOT / "immunobench",
    "immunobench.defenses": ROOT / "defenses",
    "immunobench.attacks": ROOT / "attacks",
    "immunobench.metrics": ROOT / "metrics",
    "immunobench.tasks": ROOT / "tasks",
    "immunobench.leaderboard": ROOT / "leaderboard",
}
CORE = ("immunobench", "immunobench.defenses", "immunobench.attacks", "immunobench.leaderboard")
WORLD = "immunobench.world"
# The command line is the front door of every subcommand, `immunobench world train|check` included.
FRONT_DOOR = {"immunobench.cli"}


def package_modules() -> dict[str, Path]:
    """Module name → file, for every module of the installed package."""
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in ``tree``, at any depth, but not under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports (the deepest existing module of each name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            add(full if full in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _is_core(name: str) -> bool:
    if name in FRONT_DOOR or name == WORLD or name.startswith(WORLD + "."):
        return False
    if name.startswith(("immunobench.defenses", "immunobench.attacks", "immunobench.leaderboard")):
        return True
    return name.count(".") <= 1 and not name.startswith(("immunobench.metrics", "immunobench.tasks"))


def test_the_graph_sees_the_whole_package():
    graph = import_graph()
    assert {"immunobench.runner", "immunobench.defenses.mima", "immunobench.metrics.clip",
            "immunobench.leaderboard.report", "immunobench.world.train", "immunobench.world.judges"} <= set(graph)
    # function-level and relative imports count: the runner imports the leaderboard inside run()
    assert "immunobench.leaderboard.results" in graph["immunobench.runner"]
    assert "immunobench.plugins" in graph["immunobench.metrics.clip"]
    # ``if TYPE_CHECKING:`` imports never run: plugins names Backbone for its annotations only
    assert "immunobench.backbones" not in graph["immunobench.plugins"]


def test_the_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_core_does_not_import_the_world():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() if _is_core(m)
                       for t in targets if t == WORLD or t.startswith(WORLD + "."))
    assert not offenders, "core imports immunobench.world (go through the backbone/metric registry): " + "; ".join(offenders)
