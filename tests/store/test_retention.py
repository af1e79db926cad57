"""Retention: archive, then trim past no reader; a bounded dedup index with stated guarantees."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from keeper.domain.events import Deposit
from keeper.ports import LogEntry
from keeper.projector import ProjectionCore, Projector
from keeper.store.archive import Archive, ArchivedLog, SegmentWriter
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import PassReport, Retention, RetentionPolicy, run_retention
from keeper.store.snapshots import RedisSnapshotStore


def dep(i: int, eid: str | None = None) -> Deposit:
    return Deposit(event_id=eid or f"dep-{i}", ts_event=1_000 + i, account=f"a{i % 7}", bucket="cross",
                   asset="USDC", amount=Decimal(i + 1))


@pytest_asyncio.fixture(loop_scope="function")
async def log(redis_url: str) -> AsyncIterator[RedisEventLog]:
    lg = await RedisEventLog.connect(redis_url)
    try:
        yield lg
    finally:
        await lg.close()


class Clock:
    """The retention pass's clock, in ms, set by the test."""

    def __init__(self, ms: int = 0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def ms(entry_id: str) -> int:
    return parse_id(entry_id)[0]


def policy(tmp_path: Path, **kw: object) -> RetentionPolicy:
    base: dict[str, object] = {"archive_dir": tmp_path / "archive", "hot_window_s": 10.0,
                               "dedup_window_s": 10.0, "min_segment_entries": 1,
                               "segment_entries": 1000}
    base.update(kw)
    return RetentionPolicy(**base)  # type: ignore[arg-type]


async def read_everything(lg: RedisEventLog, archive: Archive) -> list[LogEntry]:
    reader = ArchivedLog(lg, archive)
    out: list[LogEntry] = []
    after = "0-0"
    while True:
        batch, nxt = await reader.read_batch(after, 333)
        if nxt == after:
            return out
        out += batch
        after = nxt


async def appended_in_two_phases(lg: RedisEventLog, n1: int, n2: int) -> tuple[list[str], list[str]]:
    """``n1`` events, then (a few ms later, so the phases differ by entry time) ``n2`` more."""
    first = [i for i in await lg.append([dep(i) for i in range(n1)]) if i]
    await asyncio.sleep(0.02)
    second = [i for i in await lg.append([dep(i) for i in range(n1, n1 + n2)]) if i]
    assert len(first) == n1 and len(second) == n2
    return first, second


async def test_archive_then_trim_keeps_every_entry_readable(log: RedisEventLog, tmp_path: Path) -> None:
    old, new = await appended_in_two_phases(log, 2500, 400)
    clock = Clock(ms(new[0]) + 10_000)  # the first phase is older than the 10 s window
    ret = Retention(log, policy(tmp_path), now_ms=clock)
    r = await ret.run_pass()
    assert not r.error, r.error
    assert (r.archived, len(r.segments), r.trimmed) == (2500, 3, 2500)
    assert r.limited_by == "hot_window" and r.archived_to == old[-1]
    assert await log.length() == 400 and r.hot_entries == 400 and r.hot_first == new[0]
    got = await read_everything(log, ret.archive)
    assert [e.id for e in got] == old + new
    assert [e.event for e in got] == [dep(i) for i in range(2900)]
    # a second pass with nothing new to do changes nothing
    r2 = await ret.run_pass()
    assert (r2.archived, r2.trimmed) == (0, 0)
    assert ret.archive.entries() == 2500
    state = await log.client.hgetall(ret.meta_key)
    assert state[b"archived_to"] == old[-1].encode()
    assert state[b"archive_dir"] == str(ret.archive.root.resolve()).encode()


async def test_nothing_is_trimmed_before_it_is_in_a_segment(log: RedisEventLog, tmp_path: Path) -> None:
    _, new = await appended_in_two_phases(log, 50, 10)
    ret = Retention(log, policy(tmp_path, min_segment_entries=100, hot_window_s=1000),
                    now_ms=Clock(ms(new[0]) + 1_000_000))
    r = await ret.run_pass()
    # 50 entries are past the window, but a segment waits for 100 entries (they are not older
    # than twice the window): nothing archived, nothing trimmed
    assert (r.archived, r.trimmed, r.limited_by) == (0, 0, "archive")
    assert await log.length() == 60
    ret._now_ms = Clock(ms(new[0]) + 2_000_000)  # twice the window: a small segment is written
    r = await ret.run_pass()
    assert (r.archived, r.trimmed) == (60, 60)


async def test_a_crash_between_segment_and_record_loses_and_duplicates_nothing(
        log: RedisEventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = await appended_in_two_phases(log, 2500, 100)
    clock = Clock(ms(new[0]) + 10_000)
    real_seal = SegmentWriter.seal
    sealed: list[object] = []

    def seal_then_die(self: SegmentWriter) -> object:
        seg = real_seal(self)
        sealed.append(seg)
        if len(sealed) == 2:  # the second segment is on disk, nothing of it recorded in Redis
            raise RuntimeError("killed")
        return seg

    monkeypatch.setattr(SegmentWriter, "seal", seal_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        await Retention(log, policy(tmp_path), now_ms=clock).run_pass()
    monkeypatch.setattr(SegmentWriter, "seal", real_seal)
    assert await log.length() == 2600  # nothing trimmed
    ret = Retention(log, policy(tmp_path), now_ms=clock)
    assert await log.client.get(ret.lock_key) is None  # the lock was released
    r = await ret.run_pass()
    assert not r.error, r.error
    assert r.archived == 500 and r.trimmed == 2500  # the rest, from the files' high-water mark
    segs = ret.archive.segments()
    assert sum(s.count for s in segs) == 2500
    assert all(a.last_key < b.key for a, b in itertools.pairwise(segs))  # no overlap
    got = await read_everything(log, ret.archive)
    assert [e.id for e in got] == old + new


async def test_dedup_within_the_window_and_after_it(log: RedisEventLog, tmp_path: Path) -> None:
    [first] = await log.append([dep(1, "px:BTC:1")])
    assert first is not None
    assert await log.append([dep(1, "px:BTC:1")]) == [None]
    clock = Clock(ms(first) + 5_000)  # within the 10 s window: kept in the index
    ret = Retention(log, policy(tmp_path, hot_window_s=1.0), now_ms=clock)
    r = await ret.run_pass()
    assert r.trimmed == 1 and r.ids_expired == 0  # the entry is archived and trimmed ...
    assert await log.append([dep(1, "px:BTC:1")]) == [None]  # ... its id still counts
    clock.ms = ms(first) + 10_001  # past the window: the id leaves the index (read from the archive)
    r = await ret.run_pass()
    assert r.ids_expired == 1 and r.ids_size == 0
    again = await log.append([dep(1, "px:BTC:1")])
    assert again[0] is not None  # documented: a copy more than W later is appended
    assert parse_id(again[0]) > parse_id(first)


async def test_sequenced_venue_ids_are_dropped_for_ever(log: RedisEventLog, tmp_path: Path) -> None:
    ids = [i for i in await log.append([dep(n, f"sim-{n}") for n in (1, 2, 4)]) if i]
    assert len(ids) == 3
    clock = Clock(ms(ids[-1]) + 1_000)
    ret = Retention(log, policy(tmp_path, hot_window_s=10_000, dedup_window_s=10.0), now_ms=clock)
    r = await ret.run_pass()
    assert r.marks == {"sim-": 2}  # stops at the gap
    assert (await log.append([dep(3, "sim-3")]))[0] is not None
    clock.ms = ms(ids[-1]) + 60_000  # every id is past the window now
    r = await ret.run_pass()
    assert r.marks == {"sim-": 4} and r.ids_expired == 4 and r.ids_size == 0
    # the venue's stream reconnects and replays its whole history: nothing lands twice
    res = await log.append([dep(n, f"sim-{n}") for n in (1, 2, 3, 4, 5, 2)])
    assert res[:4] == [None] * 4 and res[4] is not None and res[5] is None
    assert await log.client.smembers(log.ids_key) == {b"sim-5"}  # dropped ids are not indexed
    # a numbering that skips is left to the window: sim-07 is not the source's number 7
    assert (await log.append([dep(7, "sim-07")]))[0] is not None


async def test_a_snapshot_older_than_the_window_holds_trimming_back(log: RedisEventLog,
                                                                    tmp_path: Path) -> None:
    old, new = await appended_in_two_phases(log, 100, 10)
    snaps = RedisSnapshotStore(log.client)
    await snaps.save("keeper-generic-perp", old[20], b"s1")
    await snaps.save("keeper-generic-perp", old[60], b"s2")  # the previous one (at 20) still counts
    ret = Retention(log, policy(tmp_path), now_ms=Clock(ms(new[0]) + 10_000))
    r = await ret.run_pass()
    assert r.limited_by == "snapshot keeper-generic-perp"
    assert r.trim_point == f"{old[20].split('-')[0]}-{int(old[20].split('-')[1]) + 1}"
    assert r.trimmed == 21 and await log.length() == 89
    assert r.lagging and "snapshot keeper-generic-perp" in r.lagging[0]
    await snaps.save("keeper-generic-perp", new[5], b"s3")  # the projector moves on, and
    await snaps.save("keeper-generic-perp", new[6], b"s4")  # on: its previous one too
    r = await ret.run_pass()
    assert r.limited_by == "hot_window" and await log.length() == 10 and not r.lagging


async def test_a_groups_pending_entries_hold_trimming_back(log: RedisEventLog, tmp_path: Path) -> None:
    old, new = await appended_in_two_phases(log, 100, 10)
    await log.ensure_group("executor", "0")
    got = await log.read_group("executor", "c1", count=30)
    await log.ack("executor", [e.id for e in got[:10]])  # 10..29 delivered, not acknowledged
    ret = Retention(log, policy(tmp_path), now_ms=Clock(ms(new[0]) + 10_000))
    r = await ret.run_pass()
    assert r.limited_by == "group executor (pending)" and r.trim_point == old[10]
    assert r.trimmed == 10
    await log.ack("executor", [e.id for e in got[10:]])
    r = await ret.run_pass()
    assert r.limited_by == "group executor"  # undelivered entries stay too
    assert r.trimmed == 20 and await log.length() == 80
    assert any("group executor" in t for t in r.lagging)
    # the group reads on from where it was, nothing skipped
    rest = await log.read_group("executor", "c1", count=200)
    assert [e.id for e in rest] == old[30:] + new


async def test_max_entries_caps_the_hot_log(log: RedisEventLog, tmp_path: Path) -> None:
    ids = [i for i in await log.append([dep(i) for i in range(1000)]) if i]
    ret = Retention(log, policy(tmp_path, hot_window_s=3600, max_entries=300),
                    now_ms=Clock(ms(ids[-1]) + 1))
    r = await ret.run_pass()
    assert r.limited_by == "max_entries" and r.trimmed == 700 and await log.length() == 300
    assert r.hot_first == ids[700]
    assert [e.id for e in await read_everything(log, ret.archive)] == ids


async def test_dead_letters_are_bounded(log: RedisEventLog, tmp_path: Path) -> None:
    bad = await log.append_raw([b"not json %d" % i for i in range(20)])
    _, new = await appended_in_two_phases(log, 5, 5)
    assert await log.read("0-0", 100)  # reading dead-letters the 20 bad entries, once each
    for i in range(600):
        await log.dead_letter("feed", "invalid_price", "x", b"p%d" % i)
    assert await log.client.scard(log.deadref_key) == 20
    ret = Retention(log, policy(tmp_path, dead_max_entries=50), now_ms=Clock(ms(new[0]) + 10_000))
    r = await ret.run_pass()
    assert r.trimmed == 25 and r.deadrefs_removed == 20
    assert await log.client.xlen(log.dead_key) <= 50 + 100  # whole nodes of 100: approximately
    assert await log.client.scard(log.deadref_key) == 0
    assert bad[0] not in {e.id for e in await read_everything(log, ret.archive)}  # still skipped


async def test_one_pass_at_a_time(log: RedisEventLog, tmp_path: Path) -> None:
    await log.append([dep(1)])
    ret = Retention(log, policy(tmp_path))
    await log.client.set(ret.lock_key, "someone", px=10_000)
    assert (await ret.run_pass()).skipped
    await log.client.delete(ret.lock_key)
    assert not (await ret.run_pass()).skipped


async def test_the_daemon_schedule_runs_passes_until_stopped(log: RedisEventLog, tmp_path: Path) -> None:
    await log.append([dep(i) for i in range(10)])
    reports: list[PassReport] = []
    stop = asyncio.Event()
    done: Callable[[PassReport], None] = reports.append
    task = asyncio.create_task(run_retention(log, policy(tmp_path, hot_window_s=0.001, interval_s=0.05),
                                             stop, done))
    for _ in range(200):
        if len(reports) >= 3:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(reports) >= 3 and not any(r.error for r in reports)
    assert sum(r.archived for r in reports) == 10 and await log.length() == 0


async def test_a_failed_pass_is_reported_not_raised(log: RedisEventLog, tmp_path: Path) -> None:
    await log.append([dep(1)])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ret = Retention(log, policy(blocker, hot_window_s=0.001))
    r = await ret.run_pass()
    assert r.error and r.trimmed == 0 and await log.length() == 1


async def test_a_projector_without_a_snapshot_reads_the_trimmed_part_from_the_archive(
        log: RedisEventLog, tmp_path: Path) -> None:
    old, new = await appended_in_two_phases(log, 300, 50)
    ret = Retention(log, policy(tmp_path), now_ms=Clock(ms(new[0]) + 10_000))
    assert (await ret.run_pass()).trimmed == 300
    snaps = RedisSnapshotStore(log.client, format=ProjectionCore.FORMAT)

    def factory(b: bytes | None) -> ProjectionCore:
        return ProjectionCore() if b is None else ProjectionCore.restore(b)

    # a new profile, or both snapshots invalid: it starts at 0-0, below the trim point
    proj = Projector(ArchivedLog(log, ret.archive), snaps, factory, name="state", batch=64)
    assert await proj.catch_up() == 350
    full = ProjectionCore()
    for entry_id, e in zip(old + new, [dep(i) for i in range(350)], strict=True):
        full.handle(entry_id, e)
    assert proj.core is not None and proj.core.snapshot() == full.snapshot()


async def test_a_long_backlog_is_archived_over_several_passes(log: RedisEventLog, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from keeper.store import retention

    monkeypatch.setattr(retention, "ARCHIVE_BUDGET", 1000)
    ids = [i for i in await log.append([dep(i) for i in range(2500)]) if i]
    ret = Retention(log, policy(tmp_path, segment_entries=400), now_ms=Clock(ms(ids[-1]) + 20_000))
    done = [await ret.run_pass() for _ in range(3)]
    assert [r.archived for r in done] == [1000, 1000, 500]  # up to the budget per pass
    assert [r.limited_by for r in done] == ["archive", "archive", "hot_window"]
    assert [r.trimmed for r in done] == [1000, 1000, 500]
    assert await log.length() == 0 and ret.archive.entries() == 2500


async def test_the_hard_cap_trims_past_a_lagging_snapshot_but_never_past_a_group(
        log: RedisEventLog, tmp_path: Path) -> None:
    """A keeper far behind its writers: its snapshot no longer holds the hot log above
    ``cap_entries`` (archived first, then trimmed); it reads the trimmed part from the archive
    with nothing lost; a consumer group still holds trimming back."""
    ids = [i for i in await log.append([dep(i) for i in range(16_000)]) if i]
    snaps = RedisSnapshotStore(log.client, format=ProjectionCore.FORMAT)

    def factory(b: bytes | None) -> ProjectionCore:
        return ProjectionCore() if b is None else ProjectionCore.restore(b)

    # a projector that applied 1,000 entries and snapshotted there (its previous snapshot at 500)
    proj = Projector(ArchivedLog(log, Archive.of(tmp_path / "archive", log)), snaps, factory,
                     name="state", batch=700)
    await proj.start()
    while proj.applied < 1_000:
        await proj.step(block_ms=None)
    await snaps.save("state", ids[499], b"old")
    await snaps.save("state", proj.position, proj.core.snapshot())  # type: ignore[union-attr]
    pol = policy(tmp_path, hot_window_s=3600, cap_entries=10_000)
    ret = Retention(log, pol, now_ms=Clock(ms(ids[-1]) + 1))
    # without the cap the snapshot holds everything after entry 499
    r = await Retention(log, policy(tmp_path, hot_window_s=3600, max_entries=10_000),
                        now_ms=Clock(ms(ids[-1]) + 1)).run_pass()
    assert r.limited_by == "snapshot state" and await log.length() == 16_000 - 500
    r = await ret.run_pass()
    assert r.limited_by == "cap_entries" and await log.length() == 10_000
    assert r.overrun and "snapshot state" in r.overrun[0] and r.hot_first == ids[6_000]
    # the projector goes on as if nothing happened: the read that crosses the trim comes
    # from the archive
    await proj.catch_up()
    full = ProjectionCore()
    for entry_id, e in zip(ids, [dep(i) for i in range(16_000)], strict=True):
        full.handle(entry_id, e)
    assert proj.applied == 16_000 and proj.core is not None and proj.core.snapshot() == full.snapshot()
    # a consumer group 4,000 entries in holds the cap back: it cannot read an archive
    more = [i for i in await log.append([dep(i) for i in range(16_000, 20_000)]) if i]
    await log.ensure_group("executor", "0")
    got = await log.read_group("executor", "c1", count=2_000)
    await log.ack("executor", [e.id for e in got])
    r = await ret.run_pass()
    assert r.limited_by == "group executor" and await log.length() == 14_000 - 2_000 + 0
    rest = await log.read_group("executor", "c1", count=20_000)
    assert [e.id for e in rest] == (ids + more)[8_000:]


def test_a_hard_cap_below_its_minimum_or_the_soft_cap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cap_entries"):
        policy(tmp_path, cap_entries=100)
    with pytest.raises(ValueError, match="max_entries"):
        policy(tmp_path, cap_entries=20_000, max_entries=30_000)
    assert policy(tmp_path, cap_entries=20_000, max_entries=20_000).cap_entries == 20_000


async def test_a_raw_group_read_delivers_each_entry_once_and_recreates_a_lost_group(
        log: RedisEventLog) -> None:
    ids = [i for i in await log.append([dep(i) for i in range(50)]) if i]
    await log.ensure_group("executor", "0")
    first = await log.read_group_raw("executor", "c1", count=30)
    assert [i for i, _ in first] == ids[:30] and first[0][1].startswith(b"{")
    await log.ack("executor", [i for i, _ in first])
    await log.client.xgroup_destroy(log.key, "executor")  # Redis lost it (a restart without AOF)
    again = await log.read_group_raw("executor", "c1", count=100)
    assert [i for i, _ in again] == ids  # recreated from its start: at-least-once, as read_group
    assert await log.read_group_raw("executor", "c1", count=100) == []
