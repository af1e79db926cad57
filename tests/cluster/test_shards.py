"""Shards: the stable account hash, routing, and the writer's fan-out of prices to every shard's
log, on a real Redis Cluster and on a single Redis."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from keeper.domain.codec import decode
from keeper.domain.events import Deposit, Event, FeedRecovered, FeedStale, PriceUpdated
from keeper.store.redis_log import RedisEventLog
from keeper.store.shards import ShardedLog, route, shard_of
from keeper.store.slotconn import make_cluster_client

SHARDS = 16


def dep(i: int) -> Deposit:
    return Deposit(event_id=f"dep-{i}", ts_event=1_000 + i, account=f"acct-{i % 40}", bucket="cross",
                   asset="USDC", amount=Decimal(i + 1))


def price(i: int) -> PriceUpdated:
    return PriceUpdated(event_id=f"px-{i}", ts_event=1_000 + i, symbol="BTC-PERP", price=Decimal(50_000 + i))


def mixed(n: int) -> list[Event]:
    out: list[Event] = [FeedStale(event_id="stale-btc", ts_event=999, symbol="BTC-PERP")]
    for i in range(n):
        out.append(price(i) if i % 4 == 0 else dep(i))
    out.append(FeedRecovered(event_id="fresh-btc", ts_event=2_000, symbol="BTC-PERP"))
    return out


def test_the_account_hash_is_stable_and_even() -> None:
    """Pinned values (a change would move every deployment's accounts) and an even spread."""
    expect = {a: int.from_bytes(hashlib.blake2b(a.encode(), digest_size=8).digest(), "big") % 16
              for a in ("0xabc", "acct-1", "acct-2")}
    assert {a: shard_of(a, 16) for a in expect} == expect
    assert shard_of("anything", 1) == 0
    counts = Counter(shard_of(f"acct-{i}", SHARDS) for i in range(64_000))
    assert len(counts) == SHARDS
    assert 4_000 * 0.95 < min(counts.values()) <= max(counts.values()) < 4_000 * 1.05


def test_an_account_event_goes_to_its_shard_and_any_other_to_every_shard() -> None:
    d = dep(7)
    assert route(d, SHARDS) == shard_of(d.account, SHARDS)
    assert route(price(1), SHARDS) is None
    assert route(FeedStale(event_id="s", ts_event=1, symbol="X"), SHARDS) is None


async def shard_contents(lg: RedisEventLog) -> list[str]:
    raw = await lg.read_raw("0-0", 100_000)
    return [decode(p).event_id for _, p in raw]


async def check_fan_out(client: aioredis.Redis | object) -> None:
    events = mixed(400)
    writer = ShardedLog(client, SHARDS)  # type: ignore[arg-type]
    try:
        # a writer that died half-way: shard 3 already holds the first half
        await writer.logs[3].append([e for e in events[:200] if route(e, SHARDS) in (None, 3)])
        ids = await writer.append(events)
        held = {e.event_id for e in events[:200] if route(e, SHARDS) == 3}  # only there: duplicates
        assert [e.event_id for e, i in zip(events, ids, strict=True) if i is None] == [
            e.event_id for e in events if e.event_id in held]
        for s, lg in enumerate(writer.logs):
            # every shard: its accounts' events and every other event, each once, in the writer's order
            assert await shard_contents(lg) == [e.event_id for e in events if route(e, SHARDS) in (None, s)]
        assert await writer.append(events) == [None] * len(events)  # retried: nothing twice
        assert sum([await lg.length() for lg in writer.logs]) == (
            SHARDS * sum(1 for e in events if route(e, SHARDS) is None)
            + sum(1 for e in events if route(e, SHARDS) is not None))
    finally:
        await writer.close()


async def test_the_fan_out_on_a_single_redis(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await check_fan_out(client)
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="function")
async def cluster_client(cluster_url: str) -> AsyncIterator[object]:
    client = make_cluster_client(cluster_url, socket_timeout=10)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.timeout(120)
async def test_the_fan_out_on_the_cluster(cluster_client: object) -> None:
    await check_fan_out(cluster_client)
