"""The layout holds: imports point down only, no module imports itself round a cycle, and
one access runs with no web framework loaded (docs/architecture.md, "Layout").

Floors, from the ground up: vault; audit and policies; consent; access; api; migrations
and bench. A package may import its own modules and any floor below it, never a floor
above or a sibling on its own floor.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "vault": 0, "audit": 1, "policies": 1, "consent": 2, "access": 3, "api": 4,
    "migrations": 5, "bench": 5,
}  # fmt: skip  # reads as the drawing in docs/architecture.md


def _modules() -> Iterator[tuple[str, Path]]:
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path, *, module_level_only: bool) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each import of ours in a file. With `module_level_only`,
    imports inside functions and under `if TYPE_CHECKING:` are left out (they cannot make a
    cycle at import time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            yield node
            if module_level_only and isinstance(node, ast.If):
                if "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                yield from walk(node.body + node.orelse)
            elif module_level_only and isinstance(node, ast.Try):
                yield from walk(node.body + node.orelse + node.finalbody)

    nodes = walk(tree.body) if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def test_imports_point_down_only() -> None:
    wrong = []
    for module, path in _modules():
        floor = FLOORS[module.split(".")[0]]
        for imported, line in _imports(path, module_level_only=False):
            top = imported.split(".")[0]
            if top not in FLOORS or top == module.split(".")[0]:
                continue
            if FLOORS[top] >= floor:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    known = dict(_modules())
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges = set()
        for imported, _ in _imports(path, module_level_only=True):
            # `from a.b import c` names module a.b.c, or attribute c of a.b
            target = imported if imported in known else imported.rpartition(".")[0]
            if target in known and target != module:
                edges.add(target)
        graph[module] = edges
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the graph is a few hundred modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start, edges in graph.items():
        if start in index:
            continue
        work = [(start, iter(sorted(edges)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_one_access_needs_no_web_framework() -> None:
    """`import access` (the gate, exports, trace, statistics, corrections) in a process
    where FastAPI, Starlette and Typer cannot be imported at all."""
    script = textwrap.dedent(
        """
        import sys

        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"fastapi", "starlette", "typer"}:
                    raise ImportError(f"{name} is blocked")
                return None

        sys.meta_path.insert(0, Blocked())
        import access
        import access.corrections, access.exports.trace, access.gate, access.stats.service
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                        {"fastapi", "starlette", "typer", "api"})
        print(",".join(loaded) or "none")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"
