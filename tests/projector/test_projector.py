"""The projector shell: snapshots with their offset, restart = recovery, bad entries skipped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.domain import events as ev
from keeper.domain.state import encode_state
from keeper.projector import ProjectionCore, Projector, wrap_snapshot
from keeper.store.redis_log import RedisEventLog
from keeper.store.snapshots import RedisSnapshotStore
from keeper.testing import MemoryEventLog, MemorySnapshotStore


def factory(data: bytes | None) -> ProjectionCore:
    return ProjectionCore() if data is None else ProjectionCore.restore(data)


def deposits(n: int, start: int = 0) -> list[ev.Event]:
    return [ev.Deposit(event_id=f"d{i}", ts_event=i, account=f"a{i % 7}", bucket="cross", asset="USDC",
                       amount=Decimal(i + 1)) for i in range(start, start + n)]


def state_of(p: Projector) -> bytes:
    assert isinstance(p.core, ProjectionCore)
    return encode_state(p.core.state)


async def test_restart_resumes_from_the_snapshot_and_ends_equal_to_a_full_run() -> None:
    log, snaps = MemoryEventLog(), MemorySnapshotStore()
    await log.append(deposits(250))
    first = Projector(log, snaps, factory, batch=40, snapshot_every=100)
    await first.catch_up()
    await first.snapshot()
    await log.append(deposits(130, start=250))

    resumed = Projector(log, snaps, factory, batch=40, snapshot_every=100)
    await resumed.catch_up()
    assert resumed.restored_from is not None
    assert resumed.applied == 130  # only the tail was replayed

    full = Projector(MemoryEventLog(), MemorySnapshotStore(), factory)
    await full.log.append(deposits(380))
    await full.catch_up()
    assert state_of(resumed) == state_of(full)
    assert resumed.core is not None and resumed.core.offset == await log.last_id()


async def test_a_snapshot_that_fails_validation_is_skipped_never_trusted() -> None:
    log, snaps = MemoryEventLog(), MemorySnapshotStore()
    await log.append(deposits(50))
    last = await log.last_id()
    await snaps.save("projector", last, wrap_snapshot(ProjectionCore.FORMAT, b"\x00garbage"))
    p = Projector(log, snaps, factory)
    await p.catch_up()
    assert p.restored_from is None
    assert p.applied == 50


async def test_a_snapshot_whose_offset_disagrees_with_its_state_is_not_trusted() -> None:
    log, snaps = MemoryEventLog(), MemorySnapshotStore()
    await log.append(deposits(20))
    p = Projector(log, snaps, factory)
    await p.catch_up()
    data = state_of(p)
    await snaps.save("projector", "1-0", wrap_snapshot(ProjectionCore.FORMAT, data))
    again = Projector(log, snaps, factory)
    await again.catch_up()
    assert again.restored_from is None
    assert state_of(again) == data


async def test_undecodable_entries_are_dead_lettered_and_projection_goes_on(redis_url: str) -> None:
    log = await RedisEventLog.connect(redis_url)
    try:
        await log.append(deposits(3))
        bad = [b'{"type":"deposit","event_id":"broken"', b'{"type":"nope","event_id":"x"}']
        await log.append_raw(bad * 600)
        await log.append(deposits(4, start=3))
        p = Projector(log, RedisSnapshotStore(log.client), factory, batch=100)
        await p.catch_up()
        assert p.applied == 7
        reasons = {d.reason for d in await log.dead_letters(5000)}
        assert reasons == {"bad_json", "unknown_type"}
    finally:
        await log.close()


@pytest.mark.parametrize("every", [1, 7, 1000])
async def test_snapshot_cadence_never_changes_the_result(every: int) -> None:
    log, snaps = MemoryEventLog(), MemorySnapshotStore()
    await log.append(deposits(60))
    p = Projector(log, snaps, factory, batch=9, snapshot_every=every)
    await p.catch_up()
    q = Projector(log, snaps, factory)
    await q.catch_up()
    assert state_of(q) == state_of(p)
