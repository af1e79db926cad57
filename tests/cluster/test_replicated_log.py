"""``keeper.store.replicated.ReplicatedLog``: a shard's log that hands out only what a replica
holds, and the sharded daemon's ``[keeper] wait_replicas`` (``auto``: 1 on a cluster, 0 on one
Redis). On the cluster (a replica a primary) every read and waited append goes through; on one
Redis (no replica) a read that returns entries raises ``LogNotReplicated`` and hands out
nothing, and the entries a group read took are handed out again once the barrier passes."""

from __future__ import annotations

import pytest

from keeper.app.config import load_config
from keeper.app.sharded import wait_replicas_for
from keeper.errors import LogNotReplicated
from keeper.store.replicated import ReplicatedLog
from tests.cluster.lease_helpers import open_client, outcome


async def test_a_cluster_shard_hands_out_entries_once_its_replica_holds_them(cluster_url: str) -> None:
    client = await open_client(cluster_url)
    log = ReplicatedLog(client, shard="5", wait_replicas=1)
    try:
        assert await log.barrier() == 1
        await log.append([outcome("a"), outcome("b")])
        assert [e.event.event_id for e in await log.read()] == ["out:a", "out:b"]
        await log.ensure_group("g")
        got = await log.read_group("g", "c1", 10)
        assert len(got) == 2 and await log.read_pending("g", "c1") == got
        assert log.unreplicated is None and log.stats["not_replicated"] == 0
    finally:
        await log.close()
        await client.aclose()


async def test_without_a_replica_nothing_read_is_handed_out_and_a_group_read_is_kept_pending(
        redis_url: str) -> None:
    client = await open_client(redis_url)
    log = ReplicatedLog(client, shard="0", wait_replicas=1, wait_timeout_ms=50)
    try:
        assert await log.read() == []  # an empty read needs no barrier
        await log.append([outcome("a")], wait_replicas=0)
        with pytest.raises(LogNotReplicated):
            await log.read_batch()
        assert log.unreplicated is not None and "waiting for a replica" in (log.waiting() or "")
        with pytest.raises(LogNotReplicated):  # a waited append: written, not acknowledged
            await log.append([outcome("b")])
        await log.ensure_group("g")
        with pytest.raises(LogNotReplicated):
            await log.read_group("g", "c1", 10)
        log.wait_replicas = 0  # the barrier passes: the entries the group read took come back
        assert [e.event.event_id for e in await log.read_pending("g", "c1")] == ["out:a", "out:b"]
        assert await log.append([outcome("b")]) == [None]  # the retried append: a duplicate
        assert log.unreplicated is None
    finally:
        await log.close()
        await client.aclose()


def test_wait_replicas_is_one_on_a_cluster_and_zero_on_one_redis_unless_configured() -> None:
    assert wait_replicas_for("auto", "redis+cluster://127.0.0.1:7000") == 1
    assert wait_replicas_for("auto", "redis://127.0.0.1:6379/0") == 0
    assert wait_replicas_for(2, "redis://127.0.0.1:6379/0") == 2
    assert load_config(None, env={}, register_secrets=False).keeper.wait_replicas == "auto"
    env = {"KEEPER_KEEPER__WAIT_REPLICAS": "0"}
    assert load_config(None, env=env, register_secrets=False).keeper.wait_replicas == 0
