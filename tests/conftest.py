"""Shared fixtures.

- ``redis_server``: a private ``redis-server`` for the whole test session, on a free loopback
  port, in a temporary folder (never the machine's shared instance). Tests may kill and restart
  it through the returned ``EmbeddedRedis``.
- ``redis_url``: that server's URL, flushed before each test that asks for it.
- ``shared_dir`` / ``vectors_dir`` / ``data_dir``: ``../shared`` (or ``KEEPER_SHARED_DIR``);
  tests that need them skip with the reason when the folder is absent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeper.store.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


DEFAULT_RECURSION_LIMIT = 1000


@pytest.fixture(autouse=True)
def _default_recursion_limit() -> None:
    """Every test starts at the interpreter's default recursion limit, as the keeper runs: a
    limit left raised by an earlier test lets a C decoder (msgspec) recurse past the C stack on a
    deeply nested payload (a segfault) where it would raise ``RecursionError``."""
    if sys.getrecursionlimit() > DEFAULT_RECURSION_LIMIT:
        sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)


def _shared() -> Path:
    return Path(os.environ.get("KEEPER_SHARED_DIR", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    p = _shared()
    if not p.is_dir():
        pytest.skip(f"shared folder {p} is absent "
                    "(set KEEPER_SHARED_DIR to the folder with vectors/ and data/)")
    return p


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    p = shared_dir / "vectors"
    if not p.is_dir():
        pytest.skip(f"{p} is absent: the venues' worked examples are needed for this test")
    return p


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    p = Path(os.environ.get("KEEPER_DATA_DIR", shared_dir / "data"))
    if not p.is_dir():
        pytest.skip(f"{p} is absent: the recorded crash data is needed for this test")
    return p


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    if not redis_server.running():
        redis_server.start()
    redis_server.flushall()
    return redis_server.url
