"""A shortened soak: events through a writer at a steady 20,000/s, a projector with Redis
snapshots and a consumer group reading along, retention on with an 8 s hot window (a pass every
0.5 s). Redis memory stays flat once the window is full (at the end at most 1.2x what it was
after the first window), and every entry is in the archive or the hot log, once.

``KEEPER_SOAK_EVENTS`` sets the size (default 500,000: 25 s of writing); ``bench/bench_retention.py``
runs the long one at full speed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest_asyncio

from keeper.domain.codec import encode
from keeper.domain.events import Deposit, PriceUpdated
from keeper.projector import ProjectionCore, Projector
from keeper.store.archive import Archive, ArchivedLog
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import PassReport, RetentionPolicy, run_retention
from keeper.store.snapshots import RedisSnapshotStore

EVENTS = int(os.environ.get("KEEPER_SOAK_EVENTS", "500000"))
RATE = 20_000
BATCH = 500


def payloads(n: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        if i % 3:
            e: Deposit | PriceUpdated = Deposit(
                event_id=f"d{i}", ts_event=1_000 + i, account=f"acct-{i % 5000}", bucket="cross",
                asset="USDC", amount=Decimal(i % 997 + 1))
        else:
            e = PriceUpdated(event_id=f"p{i}", ts_event=1_000 + i, symbol=f"M{i % 20}",
                             price=Decimal(100 + i % 50))
        out.append((e.event_id, encode(e)))
    return out


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url, shard="soak")
    try:
        yield lg
    finally:
        await lg.close()


async def test_soak_memory_stays_flat_and_no_entry_is_lost(log: RedisEventLog, tmp_path: Path) -> None:
    items = payloads(EVENTS)
    policy = RetentionPolicy(archive_dir=tmp_path / "archive", hot_window_s=8.0, dedup_window_s=8.0,
                             interval_s=0.5, min_segment_entries=1, segment_entries=100_000)
    stop = asyncio.Event()
    reports: list[PassReport] = []
    appended: list[str] = []
    snaps = RedisSnapshotStore(log.client, shard="soak", format=ProjectionCore.FORMAT)
    archive = Archive.of(policy.archive_dir, log)
    proj = Projector(ArchivedLog(log, archive), snaps,
                     lambda b: ProjectionCore() if b is None else ProjectionCore.restore(b),
                     name="state", batch=2_000, snapshot_every=50_000, snapshot_interval_s=0.5)

    async def write() -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        for k in range(0, len(items), BATCH):
            res = await log.append_encoded(items[k:k + BATCH])
            appended.extend(i for i in res if i is not None)
            # steady, never faster: a writer held up (a loaded machine) does not catch up in a
            # burst, which would fill the dedup window's index faster at the end than at the start
            due = max(due, loop.time() - BATCH / RATE) + BATCH / RATE
            if (ahead := due - loop.time()) > 0:
                await asyncio.sleep(ahead)

    async def follow() -> None:
        await proj.start()
        while not stop.is_set():
            await proj.step(block_ms=50)
        await proj.catch_up()
        await proj.snapshot()

    async def executor() -> None:
        await log.ensure_group("executor", "0")
        while not stop.is_set():
            got = await log.read_group("executor", "c1", count=2_000, block_ms=50)
            await log.ack("executor", [e.id for e in got])

    def on_pass(r: PassReport) -> None:
        reports.append(r)
        if os.environ.get("KEEPER_SOAK_VERBOSE"):
            print(r.summary())

    tasks = [asyncio.create_task(run_retention(log, policy, stop, on_pass)),
             asyncio.create_task(follow()), asyncio.create_task(executor())]
    writer = asyncio.create_task(write())
    await asyncio.wait_for(writer, 600)
    # after the first window: a whole window since the first pass (the hot log and the index full)
    full_at = next(r.started_ms for r in reports if r.started_ms) + int(policy.hot_window_s * 1000)
    steady = [r for r in reports if r.trimmed and not r.error and r.started_ms >= full_at]
    assert len(steady) >= 3, [r.summary() for r in reports]
    first, end = steady[0], steady[-1]
    # the dedup index is on: recent ids are refused
    assert await log.append_encoded(items[-BATCH:]) == [None] * BATCH
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert not [r.error for r in reports if r.error]
    print(f"soak: {EVENTS} events, {len(reports)} passes; used_memory after the first window "
          f"{first.used_memory}, at the end {end.used_memory} ({end.used_memory / first.used_memory:.2f}x), "
          f"max {max(r.used_memory for r in steady)}; archived {end.archive_entries}")
    assert end.used_memory <= 1.2 * first.used_memory
    bound = RATE * (policy.hot_window_s + 2)  # the window and a pass or two
    assert end.hot_entries < bound and end.ids_size < bound
    # no entry lost, none twice: the archive then the hot log hold exactly what was appended
    got: list[str] = []
    after = "0-0"
    full = ArchivedLog(log, archive)
    while True:
        raw = await full.read_raw(after, 10_000)
        if not raw:
            break
        got += [i for i, _ in raw]
        after = raw[-1][0]
    assert len(got) == len(appended) == EVENTS
    assert got == sorted(appended, key=parse_id)
    assert proj.applied == EVENTS

