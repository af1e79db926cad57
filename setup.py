"""Build: the keeper's hot pure-Python modules compiled with mypyc, where the build can.

The modules stay ordinary, type-checked Python (``mypy --strict``) and run as such when they are
not compiled; mypyc turns the same source into C extensions that import in their place (about
1.3x on ``keeper replay``, see docs/replay.md). ``KEEPER_PURE=1`` builds nothing (pure Python);
a build without mypyc or a C compiler falls back to pure Python with a warning.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = ["keeper/domain/screen.py", "keeper/domain/decide.py"]  # and keeper/_compiled.py
"""The re-check hot path: the health screen and the keeper core (no msgspec Struct lives in
either: msgspec reads field types from classes that mypyc would compile)."""


def ext_modules() -> list[object]:
    if os.environ.get("KEEPER_PURE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("keeper: mypyc not available, building pure Python", file=sys.stderr)
        return []
    # the build environment has no numpy or msgspec stubs: their values are plain objects to mypyc
    return list(mypycify(["--ignore-missing-imports", *COMPILED], opt_level="3", debug_level="0"))


setup(ext_modules=ext_modules())
