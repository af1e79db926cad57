"""The compiled build (mypyc, setup.py): same behaviour as the source, and never a stale one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keeper import _compiled


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    for name in _compiled.COMPILED:
        src = tmp_path / f"{name}.py"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {name}\n")
    src = tmp_path / "domain" / "screen" / "rows.py"
    built = src.parent / "rows.cpython-311-x86_64-linux-gnu.so"
    built.write_bytes(b"\x7fELF")
    return src, built


def _record(root: Path) -> None:
    (root / _compiled.RECORD).write_text(json.dumps(_compiled.source_hashes(root)))


def test_a_build_of_another_source_is_refused_with_the_fix(tmp_path: Path) -> None:
    src, _ = _tree(tmp_path)
    with pytest.raises(ImportError, match=r"compiled domain/screen/rows was built from another rows\.py"):
        _compiled.check(tmp_path)  # no record of what was compiled
    _record(tmp_path)
    _compiled.check(tmp_path)
    src.write_text("# edited since the build\n")
    with pytest.raises(ImportError, match=r"rebuild with `make setup`"):
        _compiled.check(tmp_path)


def test_sources_without_a_build_need_no_record(tmp_path: Path) -> None:
    _, built = _tree(tmp_path)
    built.unlink()
    _compiled.check(tmp_path)


def test_the_makefile_rebuilds_on_the_modules_the_build_compiles() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = makefile.split("COMPILED :=", 1)[1].split("\n\n", 1)[0].replace("\\", " ").split()
    assert sorted(listed) == sorted(f"keeper/{name}.py" for name in _compiled.COMPILED)


def test_compiled_names_the_modules_that_import_compiled() -> None:
    import keeper.domain.decide
    import keeper.domain.screen.screen

    names = _compiled.compiled()
    for mod in (keeper.domain.screen.screen, keeper.domain.decide):
        name = mod.__name__.removeprefix("keeper.")
        assert (name in names) == str(mod.__file__).endswith(".so")


def test_keeper_pure_imports_the_sources_whatever_is_built() -> None:
    import subprocess
    import sys

    code = ("from keeper import _compiled; "
            "import keeper.domain.screen.screen as s, keeper.domain.decide as d; "
            "print(_compiled.compiled(), s.__file__.endswith('.py'), d.__file__.endswith('.py'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "KEEPER_PURE": "1"})
    assert out.stdout.split() == ["[]", "True", "True"]


def test_a_log_recorded_by_this_build_verifies_under_the_pure_sources(tmp_path: Path) -> None:
    """Determinism across builds: decisions recorded live by whatever this process imports
    (compiled where built) are re-derived byte for byte by ``KEEPER_PURE=1 keeper replay``."""
    import importlib.util
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_replay", root / "bench" / "bench_replay.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.ACCOUNTS = 400  # the bench's live run, small: every kind of entry, hundreds of intents
    export = tmp_path / "live.ndjson"
    _, intents = bench.generate(export, events=150_000, seed=7)
    assert intents > 50
    keeper = Path(sys.executable).with_name("keeper")
    cmd = [str(keeper), "replay", "--ndjson", str(export), "--verify", "--profile", "generic-perp",
           "--mode", "live"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "KEEPER_PURE": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"verify: {intents} decisions, 0 divergences" in out.stdout
