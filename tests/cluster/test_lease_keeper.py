"""Membership heartbeats and the ``LeaseKeeper`` on a real store (one Redis and the cluster),
ticks driven by hand: three processes spread 16 shards 6/5/5, one leaving hands its shards over
at the next ticks, one joining takes its share, a lease taken over is reported lost, a lease not
renewed in time stops being trusted locally."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest_asyncio

from keeper.store.lease_keeper import LeaseKeeper
from keeper.store.leases import Lease, ShardLeases
from keeper.store.membership import Membership, balance, shard_names
from keeper.store.slotconn import RedisClient
from tests.cluster.lease_helpers import open_client

SHARDS = shard_names(16)


@pytest_asyncio.fixture(loop_scope="function")
async def client(store_url: str) -> AsyncIterator[RedisClient]:
    c = await open_client(store_url)
    yield c
    await c.aclose()


def keeper(client: RedisClient, name: str, ttl_ms: int = 5_000, **kw: object) -> LeaseKeeper:
    return LeaseKeeper(ShardLeases(client, ttl_ms=ttl_ms), Membership(client, ttl_ms=ttl_ms),
                       SHARDS, name, **kw)  # type: ignore[arg-type]


async def owners(client: RedisClient) -> dict[str, str]:
    leases = ShardLeases(client)
    out = {}
    for s in SHARDS:
        held = await leases.holder_of(s)
        if held is not None:
            out[s] = held.holder
    return out


async def settle(keepers: list[LeaseKeeper], rounds: int = 3) -> None:
    for _ in range(rounds):
        for k in keepers:
            await k.tick()


async def test_heartbeats_expire_and_leave_is_at_once(client: RedisClient) -> None:
    m = Membership(client, ttl_ms=150)
    assert await m.beat("a") == ["a"]
    assert await m.beat("b") == ["a", "b"]
    assert await m.leave("a") == ["b"]
    await asyncio.sleep(0.3)
    assert await m.live() == []
    assert await m.beat("c") == ["c"]


async def test_three_keepers_spread_sixteen_shards_six_five_five(client: RedisClient) -> None:
    ks = [keeper(client, f"keeper-{c}") for c in "abc"]
    await settle(ks)
    got = await owners(client)
    assert set(got) == set(SHARDS)
    assert sorted(Counter(got.values()).values()) == [5, 5, 6]
    assert got == {s: m for m, mine in balance([k.holder for k in ks], SHARDS).items() for s in mine}
    for k in ks:
        assert all(k.owns(s) == (got[s] == k.holder) for s in SHARDS)
        fence = k.fence(next(iter(k.held)))
        assert fence is not None and fence.holder == k.holder


async def test_a_leaving_keeper_hands_its_shards_over_and_few_others_move(client: RedisClient) -> None:
    released: list[str] = []
    ks = [keeper(client, f"keeper-{c}") for c in "abc"]
    ks[2].on_released = lambda lease: released.append(lease.shard)
    await settle(ks)
    before = await owners(client)
    await ks[2].close()  # releases its leases and leaves: no waiting for expiry
    assert sorted(released, key=int) == sorted((s for s, m in before.items() if m == "keeper-c"), key=int)
    await settle(ks[:2])
    after = await owners(client)
    assert set(after) == set(SHARDS) and sorted(Counter(after.values()).values()) == [8, 8]
    moved = [s for s in SHARDS if before[s] != after[s]]
    theirs = [s for s in SHARDS if before[s] == "keeper-c"]
    assert set(theirs) <= set(moved) and len(moved) <= len(theirs) + 3


async def test_a_joining_keeper_gets_its_share_released_by_the_others(client: RedisClient) -> None:
    acquired: list[int] = []
    ks = [keeper(client, f"keeper-{c}") for c in "ab"]
    await settle(ks)
    ks.append(keeper(client, "keeper-c", on_acquired=lambda lease: acquired.append(lease.token)))
    await ks[2].tick()  # joins: its shards are still held by the others
    await settle(ks)
    got = await owners(client)
    assert sorted(Counter(got.values()).values()) == [5, 5, 6]
    assert len(acquired) == sum(1 for m in got.values() if m == "keeper-c")
    assert all(t >= 2 for t in acquired)  # each shard passed on under a new token


async def test_a_lease_taken_over_is_reported_lost_and_its_fence_withdrawn(client: RedisClient) -> None:
    lost: list[Lease] = []

    async def on_lost(lease: Lease) -> None:
        lost.append(lease)

    k = keeper(client, "keeper-a", ttl_ms=200, on_lost=on_lost)
    await k.tick()
    assert len(k.held) == 16
    old = k.held["3"]
    await asyncio.sleep(0.35)  # a pause past the TTL: nothing renewed
    taker = ShardLeases(client, ttl_ms=60_000)
    new = await taker.acquire("3", "taker")
    assert new is not None and new.token > old.token
    t = await k.tick()
    assert "3" in t.lost and "3" in t.busy and [x.shard for x in lost if x.shard == "3"] == ["3"]
    assert lost[[x.shard for x in lost].index("3")].token == old.token
    assert not k.owns("3") and k.fence("3") is None


async def test_leases_not_renewed_in_time_are_not_trusted_locally(client: RedisClient) -> None:
    now = [100.0]
    k = keeper(client, "keeper-a", ttl_ms=5_000, now=lambda: now[0])
    await k.tick()
    assert k.owns("0") and k.fence("0") is not None
    now[0] += 4.9
    assert k.owns("0")
    now[0] += 0.2  # the TTL since the last renewal was sent: Redis may grant it elsewhere soon
    assert not k.owns("0") and k.fence("0") is None


async def test_run_ticks_with_an_injected_sleep_and_closes_on_stop(client: RedisClient) -> None:
    stop = asyncio.Event()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 3:
            stop.set()

    k = keeper(client, "keeper-a", ttl_ms=3_000, sleep=sleep)
    await k.run(stop)
    assert sleeps == [1.0, 1.0, 1.0] and k.counts["acquired"] == 16 and k.counts["renewed"] == 32
    assert not k.held and await owners(client) == {}
    assert await Membership(client).live() == []
