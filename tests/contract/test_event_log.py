"""The EventLog contract, written once and run against MemoryEventLog and RedisEventLog.

The Redis variant runs on the session's private redis-server (``redis_url``), never on 6379.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from keeper.domain import codec
from keeper.domain.events import Deposit, PriceUpdated
from keeper.errors import LogError
from keeper.ports import LogEntry
from keeper.store.ndjson import export_log, iter_ndjson
from keeper.store.ndjson_import import import_log
from keeper.store.redis_log import RedisEventLog
from keeper.testing import FakeClock, MemoryEventLog

BACKENDS = ["memory", "redis"]


@dataclass
class Harness:
    """One backend: ``make(shard)`` opens another log on the same backend (a fresh, empty one)."""

    kind: str
    log: Any
    clock: FakeClock
    opened: list[Any]
    url: str | None

    async def make(self, shard: str) -> Any:
        if self.kind == "memory":
            return MemoryEventLog(FakeClock(1_700_000_000_000_000))
        lg = await RedisEventLog.connect(self.url or "", shard=shard)
        self.opened.append(lg)
        return lg

    async def age(self, ms: int) -> None:
        """Let pending entries become idle for ``ms``."""
        if self.kind == "memory":
            self.clock.advance(ms * 1000)
        else:
            await asyncio.sleep(ms / 1000)

    async def drop_groups(self, group: str) -> None:
        """What a Redis restart without persistence does to consumer groups."""
        if self.kind == "memory":
            self.log.drop_groups()
        else:
            await self.log.client.xgroup_destroy(self.log.key, group)


@pytest_asyncio.fixture(params=BACKENDS, loop_scope="function")
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    clock = FakeClock(1_700_000_000_000_000)
    if request.param == "memory":
        yield Harness("memory", MemoryEventLog(clock), clock, [], None)
        return
    url = request.getfixturevalue("redis_url")
    log = await RedisEventLog.connect(url)
    harness = Harness("redis", log, clock, [log], url)
    try:
        yield harness
    finally:
        for lg in harness.opened:
            await lg.close()


def dep(i: int, account: str = "a1", amount: str = "10") -> Deposit:
    return Deposit(event_id=f"dep-{i}", ts_event=1_000 + i, account=account, bucket="cross",
                   asset="USDC", amount=Decimal(amount))


def px(i: int, price: str = "100.5") -> PriceUpdated:
    return PriceUpdated(event_id=f"px-{i}", ts_event=2_000 + i, symbol="BTC-PERP", price=Decimal(price))


def key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def read_all(log: Any) -> list[LogEntry]:
    out: list[LogEntry] = []
    after = "0-0"
    for _ in range(10_000):
        batch, after2 = await log.read_batch(after, 7)
        out += batch
        if after2 == after:
            return out
        after = after2
    raise AssertionError("unbounded log")


# ---------------------------------------------------------------- append and read


async def test_append_then_read_in_order(h: Harness) -> None:
    events = [dep(i) if i % 3 else px(i, f"{100 + i}.25") for i in range(25)]
    ids = await h.log.append(events[:10])
    ids += await h.log.append(events[10:])
    assert all(i is not None for i in ids)
    assert [key(i) for i in ids] == sorted(key(i) for i in ids)
    assert len(set(ids)) == 25
    got = await read_all(h.log)
    assert [e.event for e in got] == events
    assert [e.id for e in got] == ids
    assert await h.log.length() == 25
    assert await h.log.last_id() == ids[-1]


async def test_read_after_and_count(h: Harness) -> None:
    ids = await h.log.append([dep(i) for i in range(10)])
    got = await h.log.read(ids[3], count=4)
    assert [e.id for e in got] == ids[4:8]
    assert [e.event.event_id for e in got] == [f"dep-{i}" for i in range(4, 8)]
    assert await h.log.read(ids[-1]) == []


async def test_empty_log(h: Harness) -> None:
    assert await h.log.read() == []
    assert await h.log.last_id() == "0-0"
    assert await h.log.length() == 0
    assert await h.log.append([]) == []


async def test_blocking_read_waits_then_wakes(h: Harness) -> None:
    t0 = asyncio.get_running_loop().time()
    assert await h.log.read("0-0", block_ms=150) == []
    assert asyncio.get_running_loop().time() - t0 >= 0.1

    reader = h.log if h.kind == "memory" else await h.make("0")  # a blocking reader: own client

    async def later() -> None:
        await asyncio.sleep(0.05)
        await h.log.append([dep(1)])

    task = asyncio.create_task(later())
    got = await asyncio.wait_for(reader.read("0-0", block_ms=5_000), 5)
    await task
    assert [e.event.event_id for e in got] == ["dep-1"]


# ---------------------------------------------------------------- duplicates and atomicity


async def test_retrying_producer_appends_once(h: Harness) -> None:
    events = [dep(i) for i in range(5)]
    first = await h.log.append(events)
    second = await h.log.append(events)  # the producer did not see the reply and retried
    assert all(first) and second == [None] * 5
    assert await h.log.length() == 5
    assert [e.event for e in await read_all(h.log)] == events
    assert h.log.stats["appended"] == 5 and h.log.stats["duplicates"] == 5


async def test_duplicate_within_a_batch_and_partial_overlap(h: Harness) -> None:
    res = await h.log.append([dep(1), dep(2), dep(1, amount="99")])
    assert res[0] is not None and res[1] is not None and res[2] is None
    res2 = await h.log.append([dep(2), dep(3)])
    assert res2[0] is None and res2[1] is not None
    got = await read_all(h.log)
    assert [e.event.event_id for e in got] == ["dep-1", "dep-2", "dep-3"]
    assert got[0].event.amount == Decimal(10)  # the first one wins; the retry does not overwrite


async def test_concurrent_batches_are_atomic(h: Harness) -> None:
    """Overlapping batches from many producers: each event once, each batch contiguous."""
    batches = [[dep(j) for j in range(b * 5, b * 5 + 20)] for b in range(12)]
    results = await asyncio.gather(*(h.log.append(b) for b in batches))
    got = await read_all(h.log)
    got_ids = [e.event.event_id for e in got]
    assert sorted(got_ids) == sorted({f"dep-{j}" for j in range(0, 11 * 5 + 20)})
    position = {e.id: n for n, e in enumerate(got)}
    for res in results:
        added = [position[i] for i in res if i is not None]
        if added:
            assert added == list(range(added[0], added[0] + len(added)))


# ---------------------------------------------------------------- bad input


BAD = [
    (codec.encode(dep(900))[:-7], "bad_json"),
    (b'{"type":"no_such_event","event_id":"x1","ts_event":1}', "unknown_type"),
    (b'{"type":"price_updated","v":9,"event_id":"x2","ts_event":1,"symbol":"BTC-PERP","price":"1"}',
     "unknown_version"),
    (b'{"type":"price_updated","event_id":"x3","ts_event":1,"symbol":"BTC-PERP","price":"NaN"}',
     "invalid_price"),
    (b'{"type":"price_updated","event_id":"x4","ts_event":1,"symbol":"BTC-PERP","price":"-3"}',
     "invalid_price"),
    (b'{"type":"price_updated","event_id":"x5","ts_event":1,"symbol":"BTC-PERP","price":"0"}',
     "invalid_price"),
    (b'{"type":"deposit","event_id":"x6","ts_event":1,"account":"a","bucket":"cross","asset":"USDC"}',
     "missing_field"),
]


async def test_bad_entries_are_dead_lettered_and_reading_goes_on(h: Harness) -> None:
    await h.log.append([dep(1)])
    bad_ids = []
    for payload, _ in BAD:
        bad_ids += await h.log.append_raw([payload])
        await h.log.append([px(len(bad_ids))])
    got = await read_all(h.log)
    assert [e.event.event_id for e in got] == ["dep-1"] + [f"px-{i}" for i in range(1, len(BAD) + 1)]
    dead = await h.log.dead_letters()
    assert [(d.reason, d.payload) for d in dead] == [(r, p) for p, r in BAD]
    assert all(d.source == "log.read" and d.detail for d in dead)
    assert h.log.stats["dead_lettered"] == len(BAD)
    assert h.log.stats["dead_lettered.invalid_price"] == 3
    # a second pass (a replay) reads the same log: the bad entries are not dead-lettered twice
    assert [e.event for e in await read_all(h.log)] == [e.event for e in got]
    assert len(await h.log.dead_letters()) == len(BAD)
    assert await h.log.length() == 1 + 2 * len(BAD)  # the log itself is never rewritten


async def test_a_batch_of_only_bad_entries_does_not_stall_a_reader(h: Harness) -> None:
    await h.log.append_raw([b"{not json"] * 5)
    await h.log.append([dep(1)])
    entries, pos = await h.log.read_batch("0-0", 5)
    assert entries == [] and pos != "0-0"
    entries, _ = await h.log.read_batch(pos, 5)
    assert [e.event.event_id for e in entries] == ["dep-1"]


async def test_explicit_dead_letter(h: Harness) -> None:
    await h.log.dead_letter("feed.binance", "invalid_price", "price 0", b'{"p":"0"}')
    (d,) = await h.log.dead_letters()
    assert (d.source, d.reason, d.detail, d.payload) == ("feed.binance", "invalid_price", "price 0",
                                                         b'{"p":"0"}')


# ---------------------------------------------------------------- upcasting


async def test_old_version_entries_are_upcast_on_read(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend PriceUpdated is now v2 (v2 names a default source); v1 entries read as v2."""
    v1 = codec.encode(px(1))
    assert b'"v":1' in v1 or b'"v"' not in v1
    await h.log.append([px(1)])

    def v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
        raw["source"] = raw.get("source") or "legacy-v1"
        return raw

    monkeypatch.setitem(codec._CURRENT, PriceUpdated, 2)
    codec.register_upcaster("price_updated", 1, v1_to_v2)
    try:
        (entry,) = await h.log.read()
    finally:
        codec.unregister_upcaster("price_updated", 1)
    assert entry.event.v == 2 and entry.event.source == "legacy-v1"
    assert entry.event.price == Decimal("100.5")
    (raw,) = await h.log.read_raw()
    assert raw[1] == v1  # the log still holds the v1 bytes


# ---------------------------------------------------------------- consumer groups


async def test_group_delivers_each_entry_once_across_consumers(h: Harness) -> None:
    await h.log.append([dep(i) for i in range(6)])
    await h.log.ensure_group("proj")
    await h.log.ensure_group("proj")  # idempotent
    a = await h.log.read_group("proj", "c1", count=4)
    b = await h.log.read_group("proj", "c2", count=4)
    assert [e.event.event_id for e in a + b] == [f"dep-{i}" for i in range(6)]
    assert await h.log.read_group("proj", "c1") == []


async def test_crashed_consumer_entries_are_claimed(h: Harness) -> None:
    await h.log.append([dep(i) for i in range(5)])
    await h.log.ensure_group("proj")
    taken = await h.log.read_group("proj", "crashy", count=3)  # reads, then "crashes" before ack
    assert len(taken) == 3
    ok = await h.log.read_group("proj", "healthy", count=10)
    await h.log.ack("proj", [e.id for e in ok])
    assert await h.log.claim_stale("proj", "healthy", min_idle_ms=60_000) == []  # not stale yet
    await h.age(120)
    claimed = await h.log.claim_stale("proj", "healthy", min_idle_ms=100)
    assert [e.id for e in claimed] == [e.id for e in taken]
    await h.log.ack("proj", [e.id for e in claimed])
    await h.age(120)
    assert await h.log.claim_stale("proj", "healthy", min_idle_ms=100) == []


async def test_group_skips_and_acks_bad_entries(h: Harness) -> None:
    await h.log.ensure_group("proj")
    await h.log.append_raw([b"garbage"])
    await h.log.append([dep(1)])
    got = await h.log.read_group("proj", "c1")
    assert [e.event.event_id for e in got] == ["dep-1"]
    assert [d.reason for d in await h.log.dead_letters()] == ["bad_json"]
    await h.log.ack("proj", [e.id for e in got])
    await h.age(50)
    assert await h.log.claim_stale("proj", "c2", min_idle_ms=0) == []  # nothing left pending


async def test_nogroup_is_recovered(h: Harness) -> None:
    await h.log.append([dep(i) for i in range(3)])
    await h.log.ensure_group("proj")
    first = await h.log.read_group("proj", "c1", count=1)
    await h.drop_groups("proj")
    again = await h.log.read_group("proj", "c1", count=10)  # recreated from the start
    assert [e.event.event_id for e in again] == ["dep-0", "dep-1", "dep-2"]
    assert first[0].id == again[0].id
    assert h.log.stats["groups_recreated"] == 1


# ---------------------------------------------------------------- export and import


@pytest.mark.parametrize("name", ["log.ndjson", "log.ndjson.gz"])
async def test_export_import_round_trip_is_exact(h: Harness, tmp_path: Path, name: str) -> None:
    await h.log.append([dep(i) if i % 2 else px(i) for i in range(2_500)])
    await h.log.append_raw([b"{truncated", b'{"pretty":\n 1}', b"\xff\x00binary"])
    await h.log.append([dep(10_000)])
    path = tmp_path / name
    n = await export_log(h.log, path)
    assert n == 2_504
    if name.endswith(".gz"):
        with gzip.open(path) as f:
            assert f.readline().startswith(b'{"id":"')
    fresh = await h.make("imported")
    assert await import_log(fresh, path, bad="keep") == n  # keep: the bad entries too, verbatim
    src = await h.log.read_raw("0-0", 10_000)
    dst = await fresh.read_raw("0-0", 10_000)
    assert dst == src
    assert list(iter_ndjson(path)) == src
    res = await fresh.append([dep(5), dep(20_000)])  # dep-5 was imported: still a duplicate
    assert res[0] is None and res[1] is not None
    with pytest.raises(LogError, match="not empty"):
        await import_log(fresh, path, bad="keep")  # holds an entry the file has not


async def test_imported_log_keeps_deduplicating(h: Harness, tmp_path: Path) -> None:
    await h.log.append([dep(i) for i in range(3)])
    path = tmp_path / "x.ndjson"
    await export_log(h.log, path)
    fresh = await h.make("imported2")
    await import_log(fresh, path)
    res = await fresh.append([dep(1), dep(3)])
    assert res[0] is None and res[1] is not None
    assert key(res[1]) > key(await h.log.last_id())
