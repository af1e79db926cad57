"""Which modules run compiled (mypyc, see setup.py), a switch back to their source, and a refusal
to run a stale build.

A compiled module imports in place of its source, so a ``.so`` older than its ``.py`` (the source
was edited or checked out since the last build) would run code that is no longer the source: for
a keeper whose replays must reproduce every decision, that is refused at import with the fix.
``KEEPER_PURE=1`` in the environment imports the sources instead, whatever is built (tracebacks
with line numbers, a debugger, a check that both agree): it is read when ``keeper`` is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = ("domain/screen", "domain/decide", "domain/guards",
            "domain/margin/health", "domain/margin/sizing", "domain/margin/tiers")
"""Module paths under ``keeper/`` that setup.py compiles (keep the two lists in step)."""

_ROOT = Path(__file__).parent


def check(root: Path | None = None) -> None:
    """Raise ImportError when a compiled module is older than its source (under ``root``:
    the installed package by default)."""
    root = root if root is not None else _ROOT
    for name in COMPILED:
        src = root / f"{name}.py"
        for built in src.parent.glob(f"{src.stem}.*.so"):
            if built.stat().st_mtime < src.stat().st_mtime:
                raise ImportError(
                    f"{built} is older than {src.name}: rebuild it with `make setup` "
                    f"(or `pip install -e .`), or delete it to run the pure-Python source")


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' ``.py`` sources before the path finder finds their builds."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        rel = fullname.removeprefix("keeper.").replace(".", "/")
        if not fullname.startswith("keeper.") or rel not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _ROOT / f"{rel}.py")


def prefer_source() -> None:
    """Import the compiled modules from their sources from now on (before they are imported)."""
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


def compiled() -> list[str]:
    """The modules that import compiled right now (for logs and benchmarks)."""
    out = []
    for name in COMPILED:
        mod = importlib.import_module("keeper." + name.replace("/", "."))
        if str(getattr(mod, "__file__", "")).endswith(".so"):
            out.append(name.replace("/", "."))
    return out


def describe() -> str:
    """One line for benchmark output: which modules run compiled."""
    return f"# compiled (mypyc): {', '.join(compiled()) or 'nothing: pure Python'}"
