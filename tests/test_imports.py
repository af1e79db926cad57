"""The ``keeper`` package has no import circle.

The graph is built from the sources' AST, not by importing them: every ``import`` and
``from ... import`` statement counts wherever it stands (module level, inside a function),
relative imports resolved against the importing module's package; except under ``if
TYPE_CHECKING:``, which never runs: a compiled fast path naming its reference's class for the
compiler (``keeper_batch`` -> ``decide.KeeperCore``) is a type, not an import. An
edge goes from the importing module to the module it names (``from pkg import name`` names
``pkg.name`` when that is a module, else ``pkg``) and to that module's enclosing packages (their
``__init__`` runs first), except the importer's own enclosing packages, which are already being
imported when it runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import keeper

ROOT = Path(keeper.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool,
              modules: dict[str, Path]) -> Iterator[str]:
    """The ``keeper`` modules one import statement in module ``name`` names."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in modules else base


def _ancestors(name: str) -> Iterator[str]:
    while "." in name:
        name = name.rpartition(".")[0]
        yield name


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    if not isinstance(node, ast.If):
        return False
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """Every ``keeper`` module and the ``keeper`` modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_ancestors(name)) | {name}
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                     for stmt in block.body for n in ast.walk(stmt)}  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in type_only:
                continue
            for target in _imported(node, name, is_package, modules):
                if target.split(".")[0] != "keeper":
                    continue
                targets.update(t for t in (target, *_ancestors(target)) if t in modules)
        graph[name] = targets - own
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's import circles: one per strongly connected component of more than one module
    (Tarjan's algorithm), each shown as one closed path through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, c) for c in components]


def _closed_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def test_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "keeper.domain.events" in graph
    # the daemon imports the admin server (aiohttp) only when the admin role starts
    assert "keeper.app.admin" in graph["keeper.app.daemon"]
    assert "keeper.app.status" not in graph["keeper.app.status"]


def _names(source: str, module: str, is_package: bool = False) -> set[str]:
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.Import | ast.ImportFrom)
    return set(_imported(node, module, is_package, _modules()))


def test_relative_imports_resolve_against_the_importers_package() -> None:
    assert _names("from . import daemon", "keeper.app.status") == {"keeper.app.daemon"}
    assert _names("from .daemon import Daemon", "keeper.app.status") == {"keeper.app.daemon"}
    assert _names("from ..replay import job", "keeper.app.cmd_replay") == {"keeper.replay.job"}
    assert _names("from .job import ReplayJob", "keeper.replay", is_package=True) == {"keeper.replay.job"}
    assert _names("from keeper.domain import events as ev", "keeper.x") == {"keeper.domain.events"}
    margin = "keeper.domain.margin"
    assert _names(f"from {margin} import liquidation_price", "keeper.x") == {margin}


def test_cycles_found_in_a_graph_with_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_keeper_has_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_a_type_only_import_is_not_an_edge(tmp_path: Path) -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import keeper.x\n")
    blocks = [b for b in ast.walk(tree) if _is_type_checking(b)]
    assert len(blocks) == 1 and isinstance(blocks[0].body[0], ast.Import)  # type: ignore[attr-defined]
    assert "keeper.domain.decide" not in import_graph()["keeper.domain.keeper_batch"]
