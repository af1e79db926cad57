"""Which modules run compiled (mypyc, see setup.py), a switch back to their source, and a refusal
to run a stale build.

A compiled module imports in place of its source, so a build of an older source (edited or
checked out since) would run code that is no longer the source: for a keeper whose replays must
reproduce every decision, that is refused at import, with the fix. The build records a SHA-256 of
each source it compiled (``_compiled.json`` beside this file); a compiled module whose source no
longer matches, or with no record, does not run. ``KEEPER_PURE=1`` in the environment imports
the sources instead, whatever is built (tracebacks with line numbers, a debugger, a check that
both agree): it is read when ``keeper`` is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = ("domain/checks", "domain/screen/edges", "domain/screen/linear", "domain/screen/rows",
            "domain/screen/screen", "domain/decide", "domain/keeper_batch", "domain/exposure",
            "domain/intents", "domain/caps", "domain/guards",
            "domain/margin/health", "domain/margin/sizing", "domain/margin/tiers", "replay/route",
            "store/lines")
"""Module paths under ``keeper/`` that setup.py compiles (it loads this module; the Makefile's
list, which decides when to rebuild, is checked against it by a test)."""

RECORD = "_compiled.json"
"""Written by the build beside this module: ``{module path: SHA-256 of the source compiled}``."""

_ROOT = Path(__file__).parent


def source_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of each compiled module's source under ``root`` (what the build records)."""
    return {name: hashlib.sha256((root / f"{name}.py").read_bytes()).hexdigest() for name in COMPILED}


def check(root: Path | None = None) -> None:
    """Raise ImportError when a compiled module under ``root`` (the installed package by
    default) was built from another source than the one beside it."""
    root = root if root is not None else _ROOT
    built = [name for name in COMPILED
             if any((root / name).parent.glob(f"{Path(name).name}.*.so"))]
    if not built:
        return
    try:
        recorded = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        recorded = {}
    for name in built:
        src = root / f"{name}.py"
        if recorded.get(name) != hashlib.sha256(src.read_bytes()).hexdigest():
            raise ImportError(
                f"the compiled {name} was built from another {src.name} than the one beside it: "
                f"rebuild with `make setup` (or `pip install -e .`), delete its .so to run the "
                f"source, or set KEEPER_PURE=1")


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
