"""Snapshot stores: atomic save with the previous kept; an invalid newest one is never trusted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio

from keeper.store.snapshots import FileSnapshotStore, RedisSnapshotStore
from keeper.testing import MemorySnapshotStore


@pytest_asyncio.fixture(params=["redis", "file", "memory"], loop_scope="function")
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "file":
        yield FileSnapshotStore(tmp_path / "snaps")
    elif request.param == "memory":
        yield MemorySnapshotStore()
    else:
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=5)
        try:
            yield RedisSnapshotStore(client)
        finally:
            await client.aclose()


async def test_save_load_newest(store: Any) -> None:
    assert await store.load("proj") is None
    await store.save("proj", "5-0", b"state-at-5")
    await store.save("proj", "9-1", b"state-at-9")
    assert await store.load("proj") == ("9-1", b"state-at-9")
    assert await store.load("other") is None


async def corrupt_newest(store: Any) -> None:
    if isinstance(store, FileSnapshotStore):
        p = store.path("proj")
        raw = bytearray(p.read_bytes())
        raw[-1] ^= 0xFF
        p.write_bytes(bytes(raw))
    else:
        await store.client.hset(store.key("proj"), "data", b"state-at-9-tampered")


@pytest.mark.parametrize("damage", ["data", "offset"])
async def test_invalid_newest_falls_back_to_previous(store: Any, damage: str) -> None:
    if isinstance(store, MemorySnapshotStore):
        pytest.skip("the in-memory twin holds objects, it cannot be damaged")
    await store.save("proj", "5-0", b"state-at-5")
    await store.save("proj", "9-1", b"state-at-9")
    if damage == "data":
        await corrupt_newest(store)
    elif isinstance(store, FileSnapshotStore):
        p = store.path("proj")
        p.write_bytes(p.read_bytes().replace(b'"9-1"', b'"9-2"', 1))
    else:
        await store.client.hset(store.key("proj"), "offset", "9-2")  # data fine, offset lies
    assert await store.load("proj") == ("5-0", b"state-at-5")


async def test_both_invalid_is_none(store: Any) -> None:
    if isinstance(store, MemorySnapshotStore):
        pytest.skip("the in-memory twin holds objects, it cannot be damaged")
    await store.save("proj", "9-1", b"state-at-9")
    await corrupt_newest(store)
    assert await store.load("proj") is None


async def test_other_format_is_not_trusted(store: Any, tmp_path: Path) -> None:
    if isinstance(store, MemorySnapshotStore):
        pytest.skip("the in-memory twin does not version")
    await store.save("proj", "9-1", b"state-at-9")
    if isinstance(store, FileSnapshotStore):
        newer = FileSnapshotStore(store.directory, format=store.format + 1)
    else:
        newer = RedisSnapshotStore(store.client, format=store.format + 1)
    assert await newer.load("proj") is None
    await newer.save("proj", "10-0", b"v2")
    assert await newer.load("proj") == ("10-0", b"v2")
    assert await store.load("proj") == ("9-1", b"state-at-9")  # the old reader uses its own format


async def test_file_store_survives_a_crash_between_renames(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    await store.save("proj", "5-0", b"a")
    await store.save("proj", "9-0", b"b")
    store.path("proj").unlink()  # the newest file is gone (as after a crash mid-save): use .prev
    assert await store.load("proj") == ("5-0", b"a")
    assert not list(tmp_path.glob("*.tmp"))
