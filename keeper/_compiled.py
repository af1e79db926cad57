"""Which modules run compiled (mypyc, see setup.py), and a refusal to run a stale build.

A compiled module imports in place of its source, so a ``.so`` older than its ``.py`` (the source
was edited or checked out since the last build) would run code that is no longer the source: for
a keeper whose replays must reproduce every decision, that is refused at import with the fix.
"""

from __future__ import annotations

import importlib
from pathlib import Path

COMPILED = ("domain/screen", "domain/decide")
"""Module paths under ``keeper/`` that setup.py compiles (keep the two lists in step)."""


def check() -> None:
    """Raise ImportError when a compiled module is older than its source."""
    root = Path(__file__).parent
    for name in COMPILED:
        src = root / f"{name}.py"
        for built in src.parent.glob(f"{src.stem}.*.so"):
            if built.stat().st_mtime < src.stat().st_mtime:
                raise ImportError(
                    f"{built} is older than {src.name}: rebuild it with `make setup` "
                    f"(or `pip install -e .`), or delete it to run the pure-Python source")


def compiled() -> list[str]:
    """The modules that import compiled right now (for logs and benchmarks)."""
    out = []
    for name in COMPILED:
        mod = importlib.import_module("keeper." + name.replace("/", "."))
        if str(getattr(mod, "__file__", "")).endswith(".so"):
            out.append(name.replace("/", "."))
    return out
