"""Archive segments: written whole or not at all, read back as one log with the hot log."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from keeper.domain.events import Deposit
from keeper.errors import LogError
from keeper.store.archive import (
    Archive,
    ArchivedLog,
    SegmentWriter,
    max_deleted,
    open_archive,
    parse_segment,
    trim_log,
)
from keeper.store.entries import parse_id
from keeper.store.ndjson import iter_ndjson
from keeper.store.redis_log import RedisEventLog


def dep(i: int) -> Deposit:
    return Deposit(event_id=f"dep-{i}", ts_event=1_000 + i, account=f"a{i % 7}", bucket="cross",
                   asset="USDC", amount=Decimal(i + 1))


def entries(n: int, start: int = 1) -> list[tuple[str, bytes]]:
    return [(f"{1_000 + i}-{i % 3}", b'{"n":%d}' % i) for i in range(start, start + n)]


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url, shard="arch")
    try:
        yield lg
    finally:
        await lg.close()


def test_segments_are_named_by_first_last_and_count(tmp_path: Path) -> None:
    archive = Archive(tmp_path, shard="7", prefix="k")
    w = SegmentWriter(archive, max_entries=4)
    w.add(entries(10))
    w.seal()
    segs = archive.segments()
    assert [(s.first, s.last, s.count) for s in segs] == [
        ("1001-1", "1004-1", 4), ("1005-2", "1008-2", 4), ("1009-0", "1010-1", 2)]
    assert archive.dir == tmp_path / "k.7"
    assert archive.high_water() == "1010-1" and archive.entries() == 10
    # gzip NDJSON in the export format: zcat of the segments is an export
    text = gzip.decompress(segs[0].path.read_bytes())
    assert text.splitlines()[0] == b'{"id":"1001-1","e":{"n":1}}'
    assert list(iter_ndjson(segs[1].path)) == entries(4, start=5)
    assert parse_segment(tmp_path / "notes.txt") is None
    assert parse_segment(tmp_path / "seg_5-0_4-0_1.ndjson.gz") is None  # last before first


def test_reads_resume_anywhere_and_skip_overlap(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    w = SegmentWriter(archive, max_entries=3)
    w.add(entries(8))
    w.seal()
    # a stray copy of entries 4..6 under another name: read once
    w2 = SegmentWriter(archive, max_entries=100)
    w2.add(entries(3, start=4))
    w2.seal()
    assert [i for i, _ in archive.iter_raw()] == [i for i, _ in entries(8)]
    assert [i for i, _ in archive.iter_raw("1004-1")] == [i for i, _ in entries(8)][4:]
    assert [i for i, _ in archive.iter_raw("1002-2", to="1005-2")] == ["1003-0", "1004-1", "1005-2"]


def test_a_crash_while_writing_leaves_no_segment(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    w = SegmentWriter(archive, max_entries=100)
    w.add(entries(5))  # never sealed: the process "died" here
    assert archive.segments() == []
    assert len(list(archive.dir.glob(".seg_*.tmp"))) == 1
    assert archive.sweep() == 1
    assert list(archive.dir.iterdir()) == []
    w.abort()


async def test_archived_log_reads_trimmed_entries_from_the_archive(log: RedisEventLog, tmp_path: Path
                                                                   ) -> None:
    ids = [i for i in await log.append([dep(i) for i in range(50)]) if i]
    raw = await log.read_raw("0-0", 100)
    archive = Archive.of(tmp_path, log)
    w = SegmentWriter(archive, max_entries=15)
    w.add(raw[:30])
    w.seal()
    assert await trim_log(log, ids[30]) == 30
    assert await log.length() == 20
    assert await max_deleted(log) == ids[29]
    # the hot log alone skips the first 30 silently; through the archive nothing is skipped
    assert len(await log.read("0-0", 100)) == 20
    reader = ArchivedLog(log, archive)
    got, after = [], "0-0"
    while True:
        batch, nxt = await reader.read_batch(after, 7)
        if nxt == after:
            break
        got += batch
        after = nxt
    assert [e.id for e in got] == ids
    assert [e.event for e in got] == [dep(i) for i in range(50)]
    # a position inside the trimmed part resumes there
    assert [e.id for e in await reader.read(ids[12], 3)] == ids[13:16]
    assert await open_archive(log, tmp_path) is not None


async def test_a_gap_between_archive_and_hot_log_is_an_error(log: RedisEventLog, tmp_path: Path) -> None:
    ids = [i for i in await log.append([dep(i) for i in range(20)]) if i]
    raw = await log.read_raw("0-0", 100)
    archive = Archive.of(tmp_path, log)
    w = SegmentWriter(archive, max_entries=100)
    w.add(raw[:5])
    w.seal()
    await trim_log(log, ids[10])  # 5..9 in no archive
    reader = ArchivedLog(log, archive)
    assert len(await reader.read("0-0", 5)) == 5
    with pytest.raises(LogError, match="archive"):
        await reader.read(ids[4], 5)
    with pytest.raises(LogError, match="--archive DIR"):
        await open_archive(log, tmp_path)
    assert await open_archive(log, None, start=ids[12]) is None  # from a later start: no gap
    assert parse_id(ids[9]) < parse_id(ids[10])
