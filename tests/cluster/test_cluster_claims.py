"""Claims on intents under the shard's hash tag (``Claims(client, shard=...)``): the whole life
of a claim on the real cluster and on one Redis, in the slot of the shard's log and lease; the
default keys on one Redis unchanged; a cluster without a shard refused with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.crc import key_slot

from keeper.errors import LogError
from keeper.execution.claim import Claims
from keeper.store.leases import ShardLeases
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import RedisClient
from tests.cluster.lease_helpers import open_client


@pytest_asyncio.fixture(loop_scope="function")
async def client(store_url: str) -> AsyncIterator[RedisClient]:
    c = await open_client(store_url)
    yield c
    await c.aclose()


async def test_a_claims_life_under_the_shard_tag(client: RedisClient) -> None:
    claims = Claims(client, shard="3", ttl_ms=100)
    assert claims.key("i1") == "keeper:{3}:claim:i1"
    assert claims.sent_key("i1") == "keeper:{3}:sent:i1"
    assert claims.fence_key == "keeper:{3}:claim:fence"
    first = await claims.take("i1", "A")
    assert first.ok and first.phase == "claimed"
    assert (await claims.take("i1", "B")).token == -1  # held by A
    assert await claims.mark_submitted("i1", "A", first.token)
    assert not await claims.mark_submitted("i1", "B", first.token)
    await asyncio.sleep(0.2)  # the claim lapses, the sent mark stays
    again = await claims.take("i1", "B", "expire")
    assert (again.ok, again.phase, again.sent) == (True, "submitted", True)
    assert again.token > first.token
    await claims.finish("i1", "confirmed", again.token)
    assert await claims.state("i1") == f"done|confirmed|{again.token}"
    assert not await claims.sent("i1")
    assert (await claims.take("i1", "C")).done


async def test_take_many_and_finish_many_under_the_shard_tag(client: RedisClient) -> None:
    claims = Claims(client, shard="5")
    ids = [f"i{k}" for k in range(20)]
    got = await claims.take_many(ids, "A", "submit")
    assert all(c.ok and c.phase == "submitted" for c in got)
    assert len({c.token for c in got}) == 20
    assert all(await asyncio.gather(*(claims.sent(i) for i in ids)))
    await claims.finish_many([(i, "confirmed", c.token) for i, c in zip(ids, got, strict=True)])
    assert not any(await asyncio.gather(*(claims.sent(i) for i in ids)))
    assert all(c.done for c in await claims.take_many(ids, "B"))


async def test_claims_share_the_slot_of_the_shard_log_and_lease(client: RedisClient) -> None:
    claims = Claims(client, shard="11")
    log = RedisEventLog(client, shard="11")
    try:
        keys = [claims.key("x"), claims.sent_key("x"), claims.fence_key, log.key,
                ShardLeases(client).key("11")]
        assert len({key_slot(k.encode()) for k in keys}) == 1
    finally:
        await log.close()


async def test_shards_keep_separate_claims(client: RedisClient) -> None:
    a, b = Claims(client, shard="0"), Claims(client, shard="1")
    assert (await a.take("same", "A")).ok
    assert (await b.take("same", "B")).ok  # another shard's intent of that id: its own claim


async def test_a_cluster_without_a_shard_is_refused_with_the_reason(cluster_url: str) -> None:
    c = await open_client(cluster_url)
    try:
        with pytest.raises(LogError, match="shard"):
            Claims(c)
    finally:
        await c.aclose()


async def test_one_redis_without_a_shard_keeps_the_old_keys(redis_url: str) -> None:
    c = await open_client(redis_url)
    try:
        claims = Claims(c)
        assert (claims.key("i"), claims.sent_key("i"), claims.fence_key) == (
            "keeper:claim:i", "keeper:sent:i", "keeper:claim:fence")
        got = await claims.take("i", "A", "submit")
        assert await c.get("keeper:claim:i") == f"submitted|A|{got.token}".encode()
        assert await c.exists("keeper:sent:i")
        await claims.finish("i", "confirmed", got.token)
        assert await c.get("keeper:claim:i") == f"done|confirmed|{got.token}".encode()
        assert not await c.exists("keeper:sent:i")
    finally:
        await c.aclose()
