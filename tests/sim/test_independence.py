"""The reference venue stands apart from the keeper: of the keeper's code, ``keeper.sim`` and the
neutral book (``keeper.scenarios``) import only the event wire format (``keeper.domain.events``,
``keeper.domain.codec``), so the venue's check is a second opinion, not the keeper's own."""

from __future__ import annotations

import ast
from pathlib import Path

import keeper

ROOT = Path(keeper.__file__).parent
CHECKED = ("sim", "scenarios")
ALLOWED = ("keeper.sim", "keeper.scenarios", "keeper.domain.events", "keeper.domain.codec")


def _allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def _package(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])


def _imported(source: str, package: str) -> list[tuple[int, str]]:
    """Every ``keeper`` module a file of ``package`` imports, at module level or inside a function:
    ``from M import n`` counts as ``M.n`` when ``M`` itself is not an allowed module (``n`` may be
    a submodule)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "keeper"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.split(".")[0] != "keeper":
                continue
            if _allowed(base):
                out.append((node.lineno, base))
            else:
                out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def test_the_venue_and_the_book_import_only_the_event_wire_format_of_the_keeper() -> None:
    files = sorted(p for d in CHECKED for p in (ROOT / d).rglob("*.py"))
    assert {"venue.py", "server.py", "ideal.py", "model.py", "book.py"} <= {p.name for p in files}
    wrong = [f"{p.relative_to(ROOT.parent)}:{line}: {m}" for p in files
             for line, m in _imported(p.read_text(), _package(p)) if not _allowed(m)]
    assert wrong == []


def test_the_import_check_sees_module_and_function_level_and_relative_imports() -> None:
    source = ("from keeper.domain import events, model\n"
              "def g():\n    import keeper.domain.margin\n    from . import venue\n"
              "    from ..domain.state import State\n")
    assert sorted(m for _, m in _imported(source, "keeper.sim")) == [
        "keeper.domain.events", "keeper.domain.margin", "keeper.domain.model",
        "keeper.domain.state.State", "keeper.sim"]
