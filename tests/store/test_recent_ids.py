"""The ids retention holds for the dedup expiry, and a pass that chases its writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.store.recent_ids import RecentIds
from keeper.store.redis_log import RedisEventLog
from keeper.store.retention import Retention
from keeper.store.retention_policy import Pin, Pos
from tests.store.test_retention import Clock, dep, log, ms, policy, read_everything

__all__ = ["log"]  # the fixture, re-used


def entries(n: int, start_ms: int = 1_000) -> list[tuple[str, bytes]]:
    """``n`` entries, a few per millisecond; every fifth has no event id."""
    out = []
    for i in range(n):
        body = {"kind": "x"} if i % 5 == 4 else {"event_id": f"e{i}", "kind": "x"}
        out.append((f"{start_ms + i // 3}-{i % 3}", msgspec.json.encode(body)))
    return out


def below_ids(raw: list[tuple[str, bytes]], cut: Pos) -> list[str]:
    ids = [msgspec.json.decode(p).get("event_id", "") for e, p in raw
           if (int(e.split("-")[0]), int(e.split("-")[1])) < cut]
    return [i for i in ids if i]


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=20),
       drop=st.integers(0, 450), cut_at=st.integers(0, 450), max_held=st.integers(50, 1_000),
       again=st.integers(0, 30))
def test_held_ids_are_the_log_run_they_stand_for(n: int, sizes: list[int], drop: int, cut_at: int,
                                                 max_held: int, again: int) -> None:
    """Added in batches (some read twice), let go of up to an entry, then taken below a cut:
    the ids popped are exactly those of the entries after the held run's start and below the
    cut, in log order, and the run's start moves to the last one taken."""
    raw = entries(n)
    r = RecentIds(max_held=max_held)
    at, after = 0, "0-0"
    for size in sizes:
        batch = raw[at:at + size]
        if not batch:
            break
        r.add(after, batch)
        back = max(0, at - again)  # the same entries read again, from an earlier point
        r.add(raw[back - 1][0] if back else "0-0", raw[back:at + len(batch)])
        at += len(batch)
        after = batch[-1][0]
    if r.start is None:  # a batch above max_held lets everything go
        assert r.end is None and r.held == 0
        return
    assert r.end == raw[at - 1][0]
    start = int(r.start.split("-")[0]), int(r.start.split("-")[1])
    held = [e for e in raw[:at] if (int(e[0].split("-")[0]), int(e[0].split("-")[1])) > start]
    assert r.held == len(held) <= max(max_held, 0) + max(sizes)
    if drop < at:
        r.drop_through(raw[drop][0])
        held = [e for e in held if e[0] not in {x[0] for x in raw[:drop + 1]}]
    cut = (1_000 + cut_at // 3, cut_at % 3)
    ids, last, count = r.take_below(cut, budget=10**9)
    assert ids == below_ids(held, cut)
    assert count == sum(1 for e, _ in held if (int(e.split("-")[0]), int(e.split("-")[1])) < cut)
    if count:
        assert last == held[count - 1][0] and (r.start == last or r.start is None)
        assert r.held == len(held) - count


def test_a_batch_that_does_not_follow_the_held_run_starts_a_new_one() -> None:
    raw = entries(30)
    r = RecentIds()
    r.add("0-0", raw[:10])
    r.add(raw[19][0], raw[20:])  # entries 10..19 were never seen: a gap
    assert (r.start, r.end, r.held) == (raw[19][0], raw[-1][0], 10)
    ids, _, n = r.take_below((10_000, 0), budget=100)
    assert n == 10 and ids == below_ids(raw[20:], (10_000, 0))
    assert r.start is None and r.held == 0


async def test_the_expiry_from_held_ids_equals_the_expiry_from_the_archive(
        log: RedisEventLog, tmp_path: Path) -> None:
    """The cap trims entries before their dedup window ends; when it does end, the process
    that archived them forgets their ids without reading the archive, and a fresh process
    (a restart: nothing held) reads them from the archive: the same index either way."""
    ids = [i for i in await log.append([dep(i) for i in range(15_000)]) if i]
    pol = policy(tmp_path, hot_window_s=3600, dedup_window_s=3600, cap_entries=10_000)
    ret = Retention(log, pol, now_ms=Clock(ms(ids[-1]) + 1))
    r = await ret.run_pass()
    assert r.trimmed == 5_000 and r.ids_expired == 0 and ret.recent.held == 5_000
    later = Clock(ms(ids[7_000]) + 3_600_000)  # entries of that millisecond and before leave the window
    gone = sum(1 for i in ids if ms(i) < ms(ids[7_000]))

    def no_archive(*_: Any) -> Any:
        raise AssertionError("the held ids should have been used")

    ret._now_ms = later
    ret.archive.event_ids = no_archive  # type: ignore[method-assign]
    r = await ret.run_pass()
    assert r.ids_expired == gone and await log.client.scard(log.ids_key) == 15_000 - gone
    held_index = await log.client.smembers(log.ids_key)
    # the same from a fresh process, on the same log as it was
    await log.client.sadd(log.ids_key, *[f"dep-{i}" for i in range(15_000)])
    await log.client.hset(f"{log.key.removesuffix(':log')}:retention", "ids_expired_to", "0-0")
    fresh = Retention(log, pol, now_ms=later)
    assert fresh.recent.held == 0
    r = await fresh.run_pass()
    assert r.ids_expired == gone and await log.client.smembers(log.ids_key) == held_index


async def test_a_pass_chases_what_its_writers_append_meanwhile(log: RedisEventLog,
                                                              tmp_path: Path) -> None:
    """Writers append while a pass archives: further rounds archive and trim that too, so the
    pass ends with the hot log at its cap (one round would leave the cap plus what arrived)."""
    ids = [i for i in await log.append([dep(i) for i in range(12_000)]) if i]

    class Busy(Retention):
        appended = 0

        async def pins(self) -> list[Pin]:
            if Busy.appended < 2:  # twice during the first round: writers at work
                Busy.appended += 1
                await log.append([dep(i) for i in range(20_000 + 3_000 * Busy.appended,
                                                         20_000 + 3_000 * (Busy.appended + 1))])
            return await super().pins()

    ret = Busy(log, policy(tmp_path, hot_window_s=3600, cap_entries=10_000, min_segment_entries=500),
               now_ms=Clock(ms(ids[-1]) + 1))
    r = await ret.run_pass()
    assert await log.length() == 10_000 and r.trimmed == 8_000 and r.limited_by == "cap_entries"
    assert len(await read_everything(log, ret.archive)) == 18_000
