"""Every public module of ``keeper`` states its contract: a module docstring and an ``__all__``.

``__all__`` names what other modules may import from it; every name it lists must exist. Private
modules (``_name.py``) and ``__main__`` are exempt.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "keeper"

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _public_modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or (path.name.startswith("_") and path.name != "__init__.py"):
            continue
        found.append((_module_name(path), path))
    return found


MODULES = _public_modules()


def test_the_walk_finds_the_package() -> None:
    names = {name for name, _ in MODULES}
    assert {"keeper", "keeper.domain.events", "keeper.projector", "keeper.store.redis_log"} <= names


@pytest.mark.parametrize(("name", "path"), MODULES, ids=str)
def test_module_states_its_contract_and_all(name: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{name} has no module docstring"
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} defines no __all__ list"
    assert all(isinstance(n, str) for n in exported)
    assert len(set(exported)) == len(exported), f"{name}: __all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}: __all__ names what the module does not have: {missing}"


def _imports_from_keeper(root: Path) -> list[tuple[str, str, str]]:
    """(importing file, module, name) for each ``from keeper.x import name`` under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module == "keeper" or node.module.startswith("keeper."):
                found.extend((str(path), node.module, alias.name) for alias in node.names)
    return found


def test_every_public_name_imported_from_a_module_is_in_its_all() -> None:
    modules = {name for name, _ in MODULES}
    every_module = {_module_name(path) for path in PACKAGE.rglob("*.py")}
    left_out = []
    for root in ("keeper", "tests", "bench"):
        for where, source, name in _imports_from_keeper(PACKAGE.parent / root):
            if source not in modules or f"{source}.{name}" in every_module:
                continue
            if name.startswith("_") and not where.startswith(str(PACKAGE)):
                continue  # a test may reach into a module's private helpers
            if name not in importlib.import_module(source).__all__:
                left_out.append(f"{source}.{name} (imported by {where})")
    assert not left_out, "\n".join(left_out)
