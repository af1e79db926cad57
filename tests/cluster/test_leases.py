"""Shard leases and fenced appends (``keeper.store.leases``), each test on the embedded single
Redis and on the real cluster: acquire, renew, expiry and takeover with ever higher tokens; an
append fenced by a lost lease writes nothing; unfenced appends as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.crc import key_slot

from keeper.errors import LeaseLost, LogError
from keeper.store.leases import Fence, ShardLeases
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient, is_cluster_url
from tests.cluster.lease_helpers import open_client, outcome


@pytest_asyncio.fixture(loop_scope="function")
async def client(store_url: str) -> AsyncIterator[RedisClient]:
    c = await open_client(store_url)
    yield c
    await c.aclose()


async def test_acquire_renew_release_with_tokens_that_only_grow(client: RedisClient) -> None:
    leases = ShardLeases(client, ttl_ms=5_000)
    a = await leases.acquire("3", "proc-a")
    assert a is not None and a.token == 1 and a.key == "keeper:{3}:lease"
    assert await leases.acquire("3", "proc-b") is None  # held by another
    held = await leases.holder_of("3")
    assert held is not None and (held.holder, held.token) == ("proc-a", 1)
    assert 0 < held.ttl_ms <= 5_000
    assert await leases.renew(a)
    assert not await leases.release(a._replace(holder="proc-b"))  # only its holder releases it
    assert await leases.release(a)
    assert await leases.holder_of("3") is None
    assert not await leases.renew(a)  # released: renewing is refused, acquire again
    b = await leases.acquire("3", "proc-b")
    assert b is not None and b.token == 2 and await leases.last_token("3") == 2
    other = await leases.acquire("4", "proc-b")  # every shard its own counter
    assert other is not None and other.token == 1


async def test_expired_lease_is_taken_over_under_a_higher_token(client: RedisClient) -> None:
    leases = ShardLeases(client, ttl_ms=150)
    old = await leases.acquire("7", "proc-a")
    assert old is not None
    await asyncio.sleep(0.3)  # past the TTL, by Redis' clock
    assert await leases.holder_of("7") is None
    new = await leases.acquire("7", "proc-b")
    assert new is not None and new.token > old.token
    assert not await leases.renew(old)  # the former holder is refused ...
    assert not await leases.release(old)  # ... and cannot release the new grant
    held = await leases.holder_of("7")
    assert held is not None and (held.holder, held.token) == ("proc-b", new.token)


async def test_expired_lease_is_not_renewed_even_when_nobody_took_it(client: RedisClient) -> None:
    leases = ShardLeases(client, ttl_ms=100)
    old = await leases.acquire("1", "proc-a")
    assert old is not None
    await asyncio.sleep(0.25)
    assert not await leases.renew(old)
    again = await leases.acquire("1", "proc-a")
    assert again is not None and again.token == old.token + 1


async def test_a_holder_acquiring_again_starts_a_new_term_that_fences_its_old_one(
        client: RedisClient) -> None:
    leases = ShardLeases(client, ttl_ms=5_000)
    first = await leases.acquire("2", "proc-a")
    second = await leases.acquire("2", "proc-a")  # e.g. restarted under the same name
    assert first is not None and second is not None and second.token == first.token + 1
    assert not await leases.renew(first)
    assert await leases.renew(second)


async def test_bad_holder_names_and_ttls_are_refused(client: RedisClient) -> None:
    with pytest.raises(LogError, match="ttl_ms"):
        ShardLeases(client, ttl_ms=0)
    leases = ShardLeases(client)
    for bad in ("", "a|b"):
        with pytest.raises(LogError, match="holder"):
            await leases.acquire("0", bad)


async def test_lease_keys_share_the_slot_of_the_shard_log(store_url: str) -> None:
    log = await RedisEventLog.connect(store_url, shard="5")
    try:
        leases = ShardLeases(log.client)
        slots = {key_slot(k.encode()) for k in (log.key, log.ids_key, leases.key("5"),
                                                leases.token_key("5"))}
        assert len(slots) == 1
    finally:
        await log.close()


@pytest.mark.parametrize("fast", [True, False])
async def test_fenced_append_after_the_lease_passed_on_writes_nothing(store_url: str,
                                                                       fast: bool) -> None:
    if not fast and is_cluster_url(store_url):
        pytest.skip("a cluster's log always appends over its raw connection")
    opened = await RedisEventLog.connect(store_url, shard="9")
    log = opened if fast else RedisEventLog(opened.client, shard="9", fast=False)  # redis-py's
    try:
        leases = ShardLeases(log.client, ttl_ms=150)
        mine = await leases.acquire("9", "proc-a")
        assert mine is not None
        assert await log.append([outcome("i1")], fence=mine.fence) != [None]
        await asyncio.sleep(0.3)
        with pytest.raises(LeaseLost, match="free"):  # expired, nobody holds it
            await log.append([outcome("i2")], fence=mine.fence)
        theirs = await leases.acquire("9", "proc-b")
        assert theirs is not None
        before = await log.length()
        with pytest.raises(LeaseLost, match="proc-b"):
            await log.append([outcome("i3"), outcome("i4")], fence=mine.fence)
        assert await log.length() == before == 1
        # nothing of the refused append reached the dedup index either
        assert await log.append([outcome("i3")], fence=theirs.fence) != [None]
        assert await log.append([outcome("i4")]) != [None]  # unfenced: as always
        assert await log.length() == 3
    finally:
        await opened.close()


async def test_the_log_default_fence_covers_every_append(store_url: str) -> None:
    log = await RedisEventLog.connect(store_url, shard="4")
    try:
        leases = ShardLeases(log.client, ttl_ms=5_000)
        mine = await leases.acquire("4", "proc-a")
        assert mine is not None
        log.fence = mine.fence  # what the shard's holder sets: the runner's appends carry it
        await log.append([outcome("x1")])
        assert await leases.acquire("4", "proc-a") is not None  # a new term: the old fence is stale
        with pytest.raises(LeaseLost):
            await log.append([outcome("x2")])
        with pytest.raises(LeaseLost):
            await log.append_encoded([("out:x3", b"{}")])
        assert await log.length() == 1
    finally:
        await log.close()


async def test_fenced_replicated_append_on_the_cluster(cluster_url: str) -> None:
    log = await RedisEventLog.connect(cluster_url, shard="6", wait_replicas=1, wait_timeout_ms=5_000)
    try:
        leases = ShardLeases(log.client, ttl_ms=5_000)
        mine = await leases.acquire("6", "proc-a")
        assert mine is not None
        assert await log.append([outcome("r1")], fence=mine.fence) != [None]
        await leases.release(mine)
        with pytest.raises(LeaseLost):
            await log.append([outcome("r2")], fence=mine.fence)
        assert await log.length() == 1
    finally:
        await log.close()


async def test_a_fence_of_another_holder_with_the_same_token_is_refused(client: RedisClient) -> None:
    # after a failover lost a grant, the same number may be granted again: the holder differs
    log = RedisEventLog(client, shard="8")
    try:
        leases = ShardLeases(client, ttl_ms=5_000)
        mine = await leases.acquire("8", "proc-a")
        assert mine is not None
        with pytest.raises(LeaseLost):
            await log.append([outcome("s1")], fence=Fence(mine.key, mine.token, "proc-z"))
        assert await log.length() == 0
    finally:
        await log.close()
