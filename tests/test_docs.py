"""The docs name what is in the repository: every path they quote exists, and every function
the architecture page's price-tick walk names can be imported."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "deploy" / "OPERATIONS.md"])
REPO_DIRS = ("keeper/", "tests/", "bench/", "docs/", "config/", "deploy/", "scripts/")
QUOTED = re.compile(r"`([^`\s]+)`")
NOT_IN_REPOSITORY = {
    "deploy/keeper.env",  # the operator's secrets file, never committed
    "tests/10_liquidate.spec.ts",  # marginfi's own test suite, cited as a source
}


def _quoted_paths(text: str) -> list[str]:
    paths = []
    for token in QUOTED.findall(text):
        path = token.rstrip(".,:;)").split(":", 1)[0]  # `file.py:function` names a file
        if path in NOT_IN_REPOSITORY:
            continue
        if path.startswith(REPO_DIRS) and not any(c in path for c in "<>{}*["):
            paths.append(path)
    return paths


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_path_exists(doc: Path) -> None:
    missing = [p for p in _quoted_paths(doc.read_text(encoding="utf-8")) if not (ROOT / p).exists()]
    assert not missing, f"{doc.name} quotes paths that are not in the repository: {missing}"


def _tick_walk() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("## One price tick")
    return text[start:text.index("\n## ", start + 1)]


def _resolve(dotted: str) -> object:
    """``keeper.<dotted>``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module("keeper." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_tick_walk_names_functions_that_exist() -> None:
    walk = _tick_walk()
    named = [t for t in QUOTED.findall(walk)
             if re.fullmatch(r"(domain|feeds|store|execution|projector|chain|replay)(\.\w+)+", t)]
    assert len(named) >= 10
    missing = []
    for dotted in named:
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            missing.append(dotted)
    assert not missing, f"docs/architecture.md's tick walk names what does not exist: {missing}"
