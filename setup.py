"""Build: the keeper's hot pure-Python modules compiled with mypyc, where the build can.

The modules stay ordinary, type-checked Python (``mypy --strict``) and run as such when they are
not compiled; mypyc turns the same source into C extensions that import in their place (about
1.4x on ``keeper replay``, see docs/replay.md). ``KEEPER_PURE=1`` builds nothing (pure Python);
a build where mypyc is missing or fails falls back to pure Python with a warning (the
benchmarks print which modules run compiled).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _load_compiled() -> ModuleType:
    """``keeper/_compiled.py`` on its own (stdlib only): importing the package would check the
    very build this is about to replace."""
    spec = importlib.util.spec_from_file_location("_keeper_compiled", "keeper/_compiled.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_COMPILED = _load_compiled()
MODULES: tuple[str, ...] = _COMPILED.COMPILED
"""The re-check hot path (the health screen, the keeper core and the perp engine it confirms
with), the events' field checks run at every decode (``domain/checks``) and the per-entry loops
of a replay (``replay/route``, ``store/lines``). No msgspec Struct
lives in any: msgspec reads field types from classes that mypyc would compile.
``margin/evaluate.py`` stays source: the package re-exports a function of the same name, which a
compiled import would resolve to the module."""
COMPILED = [f"keeper/{name}.py" for name in MODULES]


def ext_modules() -> list[object]:
    if os.environ.get("KEEPER_PURE"):
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - only when compiling
    except ImportError:
        sys.stderr.write("keeper: mypyc not available, building pure Python\n")
        return []
    try:
        return list(mypycify(COMPILED, opt_level="3", debug_level="0"))
    except (Exception, SystemExit) as exc:  # a type error under mypyc: still a working package
        sys.stderr.write(f"keeper: mypyc failed ({exc!r}), building pure Python\n")
        return []


class AllOrNothing(build_ext):
    """Builds every compiled module or none: a compiler error leaves the pure-Python package (a
    module compiled without mypyc's shared runtime module would not import)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a missing compiler...
            sys.stderr.write(f"keeper: compiling failed ({exc}), building pure Python\n")
            for ext in self.extensions:
                built = self.get_ext_fullpath(ext.name)
                if os.path.exists(built):
                    os.remove(built)
            return
        if self.extensions:
            # what was compiled, for keeper._compiled.check: beside the sources (an editable
            # install runs them in place) and in the build tree (a wheel carries it)
            record = json.dumps(_COMPILED.source_hashes(Path("keeper")), indent=1, sort_keys=True)
            for root in {Path("keeper"), Path(self.build_lib) / "keeper"}:
                if root.is_dir():
                    (root / _COMPILED.RECORD).write_text(record + "\n")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": AllOrNothing})
