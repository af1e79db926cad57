"""One shard's log on a real Redis Cluster: shards in their own slots, a primary killed with
SIGKILL under appends, and what ``wait_replicas`` (WAIT) guarantees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import pytest
from redis.crc import key_slot

from keeper.domain.events import Deposit
from keeper.errors import LogNotReplicated, LogUnavailable
from keeper.store.cluster import EmbeddedCluster
from keeper.store.redis_log import RedisEventLog
from keeper.store.slotconn import SlotConnection
from tests.contract.test_event_log import read_all

FAILOVER_BOUND_S = 45.0
"""kill -9 to appends working again: node timeout 2 s + election, on a loaded machine."""

T = TypeVar("T")


def dep(i: int, account: str = "a1") -> Deposit:
    return Deposit(event_id=f"dep-{i}", ts_event=1_000 + i, account=account, bucket="cross",
                   asset="USDC", amount=Decimal(10))


async def until_available(op: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``op()`` again while the log is unavailable (a failover in progress), until ``deadline``."""
    while True:
        try:
            return await op()
        except LogUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def slot_port(log: RedisEventLog) -> int:
    raw = log._raw
    assert isinstance(raw, SlotConnection) and raw.address is not None
    return raw.address[1]


async def test_two_shards_have_their_own_slots_and_logs(cluster_url: str,
                                                        redis_cluster: EmbeddedCluster) -> None:
    a = await RedisEventLog.connect(cluster_url, shard="0")
    b = await RedisEventLog.connect(cluster_url, shard="1")
    try:
        # every key of a shard in one slot (its scripts are atomic), each shard its own slot
        for lg in (a, b):
            keys = [lg.key, lg.ids_key, lg.dead_key, lg.deadref_key, lg.dedup.seq_key, lg.repl_key]
            assert len({key_slot(k.encode()) for k in keys}) == 1
        assert key_slot(a.key.encode()) != key_slot(b.key.encode())
        ids_a = await a.append([dep(i) for i in range(5)])
        ids_b = await b.append([dep(i) for i in range(3, 8)])  # the same event ids: another shard
        assert all(ids_a) and all(ids_b)
        assert await a.append([dep(1)]) == [None]  # dedup is per shard
        assert [e.event.event_id for e in await read_all(a)] == [f"dep-{i}" for i in range(5)]
        assert [e.event.event_id for e in await read_all(b)] == [f"dep-{i}" for i in range(3, 8)]
        # the hot path talks to the primary that owns the shard's slot
        for lg in (a, b):
            assert slot_port(lg) == redis_cluster.node_for_key(lg.key).port
        assert (await b.read(ids_b[1], count=2))[0].id == ids_b[2]
        assert await a.length() == 5 and await b.length() == 5
    finally:
        await a.close()
        await b.close()


async def test_appends_and_reads_continue_after_the_primary_is_killed(
        cluster_url: str, redis_cluster: EmbeddedCluster) -> None:
    """kill -9 of the shard's primary: its replica is promoted and the same log object carries
    on (appends and reads) within a bounded time, on the new primary.

    What may be lost: Redis replicates asynchronously, so appends the old primary acknowledged
    in the moment before it died may not have reached the replica, and are gone after the
    failover (without ``wait_replicas``). The replica applies the primary's stream in order, so
    what survives is always a prefix of what was appended: a hole never appears. Here the
    appends stop before the kill, so normally nothing is lost, but the test asserts only the
    prefix."""
    log = await RedisEventLog.connect(cluster_url, shard="0")
    try:
        before = [dep(i) for i in range(200)]
        for k in range(0, 200, 20):
            await log.append(before[k:k + 20])
        old = redis_cluster.node_for_key(log.key)
        assert slot_port(log) == old.port
        redis_cluster.kill(old)
        t0 = time.monotonic()
        deadline = t0 + FAILOVER_BOUND_S
        after = [dep(i) for i in range(1000, 1050)]
        ids = await until_available(lambda: log.append(after), deadline)
        took = time.monotonic() - t0
        assert all(ids), "a new primary had these ids already?"
        new = redis_cluster.node_for_key(log.key)
        assert new.port != old.port and slot_port(log) == new.port
        got = [e.event.event_id for e in await until_available(lambda: read_all(log), deadline)]
        survived = [e for e in got if int(e.removeprefix("dep-")) < 1000]
        assert survived == [e.event_id for e in before[:len(survived)]]  # a prefix: no hole
        assert got[len(survived):] == [e.event_id for e in after]
        print(f"failover: appends again after {took:.1f}s, {200 - len(survived)} entries lost")
    finally:
        await log.close()


async def test_replicated_appends_survive_the_primary_killed_under_load(
        cluster_url: str, redis_cluster: EmbeddedCluster) -> None:
    """With ``wait_replicas=1`` an append is acknowledged only once the replica holds it, so
    kill -9 of the primary while appends are in flight loses none of the acknowledged ones:
    the writer retries the batch that failed (the same event ids), and after the failover the
    log holds every acknowledged event exactly once, in order.

    The promoted replica has no replica of its own (one a primary here), so no append is
    acknowledged until the killed node is back (it rejoins as the new primary's replica): with
    ``WAIT 1`` a shard stops taking appends between a failover and a replica's return. The
    writer's retries span that; the test restarts the node as an operator (or a supervisor)
    would."""
    log = await RedisEventLog.connect(cluster_url, shard="0", wait_replicas=1,
                                      wait_timeout_ms=500)
    acked: list[str] = []
    killed = asyncio.Event()
    deadline = time.monotonic() + 2 * FAILOVER_BOUND_S

    async def writer() -> None:
        for b in range(60):
            batch = [dep(b * 50 + i) for i in range(50)]
            await until_available(lambda batch=batch: log.append(batch), deadline)
            acked.extend(e.event_id for e in batch)
            if b == 20:
                killed.set()
                await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await killed.wait()
        old = redis_cluster.node_for_key(log.key)
        at_kill = len(acked)
        t0 = time.monotonic()
        await asyncio.to_thread(redis_cluster.kill, old)  # appends in flight meanwhile
        new = await asyncio.to_thread(redis_cluster.wait_for_failover, old, FAILOVER_BOUND_S)
        assert new.port != old.port
        at_failover = len(acked)
        await asyncio.to_thread(redis_cluster.restart, old)  # a replica for the new primary
        await asyncio.wait_for(task, FAILOVER_BOUND_S)
        took = time.monotonic() - t0
        got = [e.event.event_id for e in await read_all(log)]
        assert got == acked  # every acknowledged event, once, in order (none was lost)
        assert len(got) == 3000 and at_kill >= 21 * 50
        print(f"replicated appends: {at_failover - at_kill} events acknowledged between the kill "
              f"and the failover, appends acknowledged again {took:.1f}s after the kill")
    finally:
        task.cancel()
        await log.close()


async def test_too_few_replicas_is_not_replicated_and_a_retry_covers_it(cluster_url: str) -> None:
    """Each primary has one replica: asking for two times out with ``LogNotReplicated``; the
    entries are on the primary (and its replica); a retry asking for one drops them as
    duplicates and confirms them."""
    log = await RedisEventLog.connect(cluster_url, shard="7", wait_timeout_ms=200)
    try:
        with pytest.raises(LogNotReplicated, match="1 of 2 replicas"):
            await log.append([dep(1), dep(2)], wait_replicas=2)
        assert await log.append([dep(1), dep(2)], wait_replicas=1) == [None, None]
        assert [e.event.event_id for e in await read_all(log)] == ["dep-1", "dep-2"]
        assert log.stats["not_replicated"] == 1
    finally:
        await log.close()
