"""The daemon's sharded mode on one Redis, in process: it takes every shard's lease, decides on
each shard's log, shows the shards on ``/summary`` and releases them at shutdown; the roles it
refuses; the owned executor sends nothing once the lease is not held."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp
import msgspec
import pytest

from keeper.app.cmd_run import with_shards
from keeper.app.config import Config, load_config
from keeper.app.daemon import Daemon
from keeper.app.shard_status import lag_ms
from keeper.app.shard_worker import OwnedExecutor, ShardHost, ShardParts
from keeper.domain import events as ev
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.errors import ConfigError, TransientError
from keeper.execution import PaperExecutor
from keeper.projector import Projector
from keeper.scenarios.book import generate_book
from keeper.store.leases import ShardLeases
from keeper.store.redis_log import RedisEventLog
from keeper.store.shards import ShardedLog, shard_of
from keeper.store.snapshots import RedisSnapshotStore
from tests.cluster.lease_helpers import open_client, until
from tests.cluster.sharded_helpers import now_us, price_events
from tests.execution.helpers import decision

D = Decimal
SHARDS = 4


def _cfg(redis_url: str, tmp_path: Path, **keeper: object) -> Config:
    base = load_config(None, env={}, register_secrets=False)
    r = msgspec.structs.replace
    return r(base, redis=r(base.redis, url=redis_url, data_dir=str(tmp_path / "redis")),
             admin=r(base.admin, port=0),
             keeper=r(base.keeper, shards=SHARDS, sharded=True, lease_ttl_ms=1000, **keeper))


async def test_sharded_daemon_owns_every_shard_decides_on_each_and_releases_them(
        redis_url: str, tmp_path: Path) -> None:
    client = await open_client(redis_url)
    writer = ShardedLog(client, SHARDS)
    marks = {"SOL-USD": D(150)}
    book = generate_book(200, 5, marks)
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    daemon = Daemon(_cfg(redis_url, tmp_path), roles=["keeper", "executor", "admin"], block_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    leases = ShardLeases(client)
    try:
        await asyncio.wait_for(daemon.started.wait(), 15)
        host = daemon.shard_host

        async def owned() -> bool:
            return bool(host.owned() == ["0", "1", "2", "3"])
        await until(owned, 15, "this process holds the four shards")
        await writer.append([*book.events, *price_events("p0", now_us(), marks, assets)])
        await writer.append(price_events("p1", now_us(), {"SOL-USD": D(120)}, assets))
        logs = [RedisEventLog(client, shard=str(s)) for s in range(SHARDS)]

        async def decided() -> bool:
            n = 0
            for lg in logs:
                n += sum(isinstance(e.event, ev.LiquidationIntended) for e in await lg.read("0-0", 100_000))
            return n >= 10
        await until(decided, 20, "paper decisions on the shards' logs")
        for lg in logs:  # every intent on its account's shard, none elsewhere
            for e in await lg.read("0-0", 100_000):
                if isinstance(e.event, ev.LiquidationIntended):
                    assert shard_of(e.event.decision.account, SHARDS) == int(lg.shard)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{daemon.admin_port}/summary") as r:
            summary = await r.json()
        rows = summary["shards"]
        assert [row["shard"] for row in rows] == ["0", "1", "2", "3"]
        assert all(row["mine"] and row["holder"] == host.holder for row in rows)
        assert all(row["lag_ms"] is not None and row["held_s"] >= 0 for row in rows)
        assert summary["ready"] is True and summary["feeds"] == 0  # the page's fields
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{daemon.admin_port}/") as r:
            assert 'id="shards"' in await r.text()  # the page's table of these rows
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert [await leases.holder_of(str(s)) for s in range(SHARDS)] == [None] * SHARDS
    from keeper.replay import manifest as mf

    for s in range(SHARDS):  # each worker's final snapshot, written before its release
        snap = RedisSnapshotStore(client, shard=str(s), format=KeeperCore.FORMAT)
        found = await snap.load("keeper-generic-perp")
        assert found is not None and found[0] == await RedisEventLog(client, shard=str(s)).last_id()
        m = await mf.read_redis(client, shard=str(s))  # and its run manifest: what replay reads
        assert m is not None and m.kind == "live" and m.source == f"keeper:{{{s}}}:log"
        assert [c.name for c in m.cores] == ["keeper-generic-perp"]
    await writer.close()
    await client.aclose()


@pytest.mark.parametrize("roles", [["keeper"], ["executor"], ["projector", "keeper", "executor"]])
async def test_sharded_mode_refuses_roles_it_does_not_run(redis_url: str, tmp_path: Path,
                                                        roles: list[str]) -> None:
    daemon = Daemon(_cfg(redis_url, tmp_path), roles=roles)
    with pytest.raises(ConfigError, match=r"sharded mode|keeper\.shards"):
        await daemon.run(asyncio.Event())


async def test_owned_executor_sends_nothing_once_the_lease_is_not_held() -> None:
    held = [True]
    x = OwnedExecutor(PaperExecutor(), lambda: held[0], "3")
    assert (await x.execute(decision(1))).ref
    held[0] = False
    with pytest.raises(TransientError, match="shard 3"):
        await x.execute(decision(2))
    answers = await x.execute_many([decision(3), decision(4)])
    assert all(isinstance(a, TransientError) for a in answers) and x.refused == 2


def test_lag_is_the_time_between_the_newest_entry_and_the_position() -> None:
    assert lag_ms("1000-0", "1250-3") == 250
    assert lag_ms("1250-3", "1250-3") == 0
    assert lag_ms(None, "1-0") is None


def test_shards_flag_overrides_the_config_and_is_checked() -> None:
    cfg = load_config(None, env={}, register_secrets=False)
    assert with_shards(cfg, 16).keeper.shards == 16 and cfg.keeper.shards == 1
    with pytest.raises(ConfigError, match="--shards"):
        with_shards(cfg, 0)


async def test_a_shard_worker_whose_part_failed_is_started_again_while_the_lease_is_held(
        redis_url: str) -> None:
    client = await open_client(redis_url)
    calls: list[str] = []

    def projectors(log: RedisEventLog, shard: str) -> list[Projector]:
        calls.append(shard)
        if len(calls) == 1:
            raise RuntimeError("a part that fails once")
        return [Projector(log, RedisSnapshotStore(client, shard=shard, format=KeeperCore.FORMAT),
                          lambda _d: KeeperCore(KeeperParams(profile="generic-perp")),
                          fmt=KeeperCore.FORMAT)]

    host = ShardHost(client, 1, ShardParts(projectors, block_ms=20), ttl_ms=1000,
                     prefix="restart-test")
    stop = asyncio.Event()
    task = asyncio.create_task(host.run(stop))
    try:
        async def restarted() -> bool:
            w = host.workers.get("0")
            return len(calls) >= 2 and w is not None and bool(w.projectors) and \
                w.projectors[0].core is not None
        await until(restarted, 10, "the worker started again and its projector up")
        assert host.owned() == ["0"] and len(calls) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


async def test_the_sharded_intake_writes_every_price_to_every_shard(redis_url: str,
                                                                    tmp_path: Path) -> None:
    base = _cfg(redis_url, tmp_path)
    cfg = msgspec.structs.replace(base, feeds=msgspec.structs.replace(
        base.feeds, fixed_prices={"USDC": D(1)}))
    daemon = Daemon(cfg, roles=["feeds"], block_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    client = await open_client(redis_url)
    logs = [RedisEventLog(client, shard=str(s)) for s in range(SHARDS)]
    try:
        await asyncio.wait_for(daemon.started.wait(), 15)

        async def everywhere() -> bool:
            for lg in logs:
                got = [e.event for e in await lg.read("0-0", 100)]
                if not any(isinstance(e, ev.PriceUpdated) and e.symbol == "USDC" for e in got):
                    return False
            return True
        await until(everywhere, 10, "the fixed price in each of the four shards' logs")
        assert daemon.shard_host is None  # no keeper role: no leases taken
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await client.aclose()


async def test_each_owned_shard_is_retained_archived_and_trimmed_with_nothing_lost(
        redis_url: str, tmp_path: Path) -> None:
    """Retention runs in sharded mode too: the owner of each shard archives and trims its log
    (pinned by its own snapshots), and archive + hot log hold every entry once, in order."""
    from keeper.store.archive import Archive, ArchivedLog

    base = _cfg(redis_url, tmp_path)
    r = msgspec.structs.replace
    archive_dir = tmp_path / "archive"
    cfg = r(base, retention=r(base.retention, hot_window_s=0.5, dedup_window_s=0.5, interval_s=0.2,
                              min_segment_entries=1, archive_dir=str(archive_dir)),
            snapshots=r(base.snapshots, interval_s=0.2, every_events=50))
    client = await open_client(redis_url)
    writer = ShardedLog(client, SHARDS)
    marks = {"SOL-USD": D(150)}
    book = generate_book(200, 5, marks)
    assets = sorted(e.params.symbol for e in book.events if isinstance(e, ev.AssetListed))
    daemon = Daemon(cfg, roles=["keeper", "executor", "admin"], block_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    logs = [RedisEventLog(client, shard=str(s)) for s in range(SHARDS)]
    try:
        await asyncio.wait_for(daemon.started.wait(), 15)
        await writer.append([*book.events, *price_events("p0", now_us(), marks, assets)])
        for k in range(1, 15):  # prices keep coming while passes run
            await writer.append(price_events(f"p{k}", now_us(), {"SOL-USD": D(150 - 3 * k)}, assets))
            await asyncio.sleep(0.1)

        async def trimmed_everywhere() -> bool:
            metas = [await client.hgetall(f"keeper:{{{s}}}:retention") for s in range(SHARDS)]
            return all(int(m.get(b"trimmed_entries", 0)) > 0 for m in metas)
        await until(trimmed_everywhere, 20, "every shard's log archived and trimmed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    for lg in logs:
        full = ArchivedLog(lg, Archive.of(archive_dir.resolve(), lg))
        ids: list[str] = []
        after = "0-0"
        while raw := await full.read_raw(after, 1_000):
            ids += [i for i, _ in raw]
            after = raw[-1][0]
        hot = await lg.read_raw("0-0", 100_000)
        assert hot and hot[0][0] != ids[0]  # trimmed from the front
        assert ids == sorted(set(ids), key=lambda i: tuple(map(int, i.split("-"))))  # once, in order
        assert ids[-len(hot):] == [i for i, _ in hot]  # the archive runs into the hot log, no gap
        events = [e for e in book.events if shard_of(getattr(e, "account", "") or "", SHARDS) == int(lg.shard)
                  or not getattr(e, "account", "")]
        assert len(ids) >= len(events)  # the book's entries for this shard, the prices, the intents
    await writer.close()
    await client.aclose()
