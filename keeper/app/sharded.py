"""The daemon's sharded mode (``[keeper] sharded = true`` with ``shards = N``, or ``keeper run --shards N``).

``run_sharded(daemon, stop, url)`` is what ``Daemon.run`` does instead of its single-shard roles:

- **intake** (``feeds``, ``ingest`` roles): the same price pipeline and ``Ingest`` writer as one
  shard, writing through ``keeper.store.shards.ShardedLog``: an account's events to its shard's
  log, every other event (prices included) to every shard's log;
- **keeper + executor** (the two go together: a shard's owner decides and submits): a
  ``keeper.app.shard_worker.ShardHost`` holding leases on shards ``0`` .. ``N-1``
  (``[keeper] lease_ttl_ms``), a ``ShardWorker`` per shard held: that shard's keeper projectors
  (one per profile, ``StampingLog`` and the freshness guard as in one shard) and its runner,
  on a log that acts only on entries ``[keeper] wait_replicas`` replicas hold (``auto``: 1 on a
  cluster, 0 on one Redis; ``keeper.store.replicated``): no intent is submitted, and no
  decision made, on an entry a Redis failover could take back;
- **admin**: the admin server over ``keeper.app.shard_status.ShardedStatus``: ``/summary`` has
  one row per shard (holder, token, lease TTL left, the lease's age here, keeper position and
  lag in ms); the per-account views are the one-shard daemon's only.

``url``: a ``redis+cluster://`` URL (each shard's keys in its own slot) or one Redis (every
shard on it). Retention (``[retention] in_daemon``) runs per shard in its owner's worker; a
projector that starts below what it trimmed, or that a hard cap may pass, reads the shard's
archive (``keeper.app.retention_role``, as the one-shard daemon's do). Each shard's owner
writes the shard's run manifest when its projectors have started (``keeper replay --shard``
reads the params there). Not in this mode: a chain venue (it runs as one shard), the
``projector`` role. Shutdown: intake first (the writer drained), then the leases released, each
worker stopping first (final snapshot while held).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from keeper.app.executors import build_executor
from keeper.app.feeds_role import build_pipeline, parser_for, subscriptions
from keeper.app.freshness import FreshnessGuard
from keeper.app.keeper_role import core_factory
from keeper.app.retention_role import capped_reader, catch_up_archived, retain
from keeper.app.shard_worker import ShardHost, ShardParts
from keeper.app.stamping import StampingLog
from keeper.app.supervise import bounded, cancel_all
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.domain.cores import fmt_of
from keeper.domain.decide import KeeperCore
from keeper.errors import ConfigError
from keeper.execution.base import VenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.feeds.ingest import Ingest
from keeper.feeds.ws import WsConfig
from keeper.ingest.account_ws import AccountStream
from keeper.projector import Projector
from keeper.replay import manifest as mf
from keeper.store.entries import parse_id
from keeper.store.redis_io import make_client, wrap_errors
from keeper.store.redis_log import RedisEventLog
from keeper.store.shards import ShardedLog
from keeper.store.slotconn import RedisClient, is_cluster_url, make_cluster_client
from keeper.store.snapshots import RedisSnapshotStore

if TYPE_CHECKING:
    from keeper.app.daemon import Daemon

__all__ = ["check_sharded", "open_client", "run_sharded", "shard_parts", "wait_replicas_for"]

_log = structlog.get_logger()

SOCKET_TIMEOUT_S = 30.0


async def open_client(url: str) -> RedisClient:
    """A binary client for ``redis://`` or ``redis+cluster://`` (a cluster's slot map loaded);
    the caller closes it."""
    if is_cluster_url(url):
        cluster = make_cluster_client(url, socket_timeout=SOCKET_TIMEOUT_S)
        async with wrap_errors("connect"):
            await cluster.initialize()
        return cluster
    return make_client(url, socket_timeout=SOCKET_TIMEOUT_S)


def check_sharded(daemon: Daemon) -> None:
    """Refuse what the sharded mode does not run (module docstring), naming the key."""
    cfg = daemon.config
    if cfg.venue.kind == "evm":
        raise ConfigError("keeper.shards: a chain venue runs as one shard; set keeper.shards = 1")
    if "projector" in daemon.roles:
        raise ConfigError("--role projector: not run in the sharded mode (keeper.shards > 1)")
    if ("keeper" in daemon.roles) != ("executor" in daemon.roles):
        raise ConfigError("--role: in the sharded mode (keeper.shards > 1) keeper and executor "
                          "run together (a shard's owner decides and submits)")


def wait_replicas_for(setting: int | str, url: str) -> int:
    """``[keeper] wait_replicas`` resolved: ``auto`` is 1 on a cluster URL, 0 on one Redis."""
    if setting == "auto":
        return 1 if is_cluster_url(url) else 0
    return int(setting)


def shard_parts(daemon: Daemon, executor: VenueExecutor | None, wait_replicas: int = 0
                ) -> ShardParts:
    """How each shard's worker builds its keeper projectors and runner from the daemon's config;
    ``wait_replicas``: what its log waits for (``wait_replicas_for``)."""
    cfg = daemon.config

    def projectors(log: RedisEventLog, shard: str) -> list[Projector]:
        out = []
        for k, profile in enumerate(daemon.profiles):
            params = msgspec.structs.replace(cfg.keeper_params(), profile=profile)
            snaps = RedisSnapshotStore(log.client, shard=shard, format=fmt_of(params))
            # through the shard's archive when a hard cap may trim past them while they run
            stamping = StampingLog(capped_reader(cfg, log), daemon.metrics, count_applied=k == 0)
            p = Projector(stamping, snaps, core_factory(params),  # type: ignore[arg-type]
                          name=f"keeper-{profile}", fmt=fmt_of(params), batch=cfg.keeper.batch_size,
                          snapshot_every=cfg.snapshots.every_events,
                          snapshot_interval_s=cfg.snapshots.interval_s, stream=True)
            stamping.guard = FreshnessGuard(
                cfg.feeds.staleness_ms * 1000, lambda p=p: getattr(p.core, "state", None),  # type: ignore[misc]
                fixed=cfg.feeds.fixed_prices)
            out.append(p)
        return out

    def runner(log: RedisEventLog, claims: Claims, x: VenueExecutor, consumer: str) -> Runner:
        return Runner(log, claims, x, consumer=consumer, batch=1000,
                      intent_ttl_us=round(cfg.execution.intent_ttl_s * 1_000_000))

    async def started(log: RedisEventLog, projs: list[Projector]) -> None:
        """The shard's run manifest (``keeper.replay.manifest``), as the one-shard daemon writes
        its own at start: every keeper core's params, so ``keeper replay --shard`` needs no flags."""
        named = [(p.name, p.core.params) for p in projs if isinstance(p.core, KeeperCore)]
        if not named:
            return
        start = min((p.restored_from or "0-0" for p in projs), key=parse_id)
        raw: Any = await log.client.xrange(log.key, min=f"({start}" if start != "0-0" else "-", count=1)
        first = raw[0][0].decode() if raw else None
        m = mf.live_manifest(named, source=log.key, first=first, status="running",
                             started_us=wall_clock_us(), config_files=cfg.sources)
        await mf.write_redis(log.client, m, shard=log.shard)
        _log.info("run_manifest_written", shard=log.shard, config_hash=m.config_hash[:12])

    async def retention(log: RedisEventLog, stop: asyncio.Event) -> None:
        await retain(cfg, log, daemon.metrics, stop, daemon._retained)

    run_retention = cfg.retention.enabled and cfg.retention.in_daemon
    return ShardParts(projectors, runner if executor is not None else None, executor,
                      block_ms=daemon.block_ms, wait_replicas=wait_replicas, started=started,
                      catch_up=lambda p: catch_up_archived(cfg, p),
                      retention=retention if run_retention else None)


async def _intake(daemon: Daemon, writer: ShardedLog) -> list[asyncio.Task[Any]]:
    cfg = daemon.config
    daemon.pipeline = build_pipeline(cfg)
    ingest = Ingest(writer, pipeline=daemon.pipeline, max_pending=10_000)
    daemon.ingest = ingest
    tasks = [daemon._spawn(ingest.run(), "ingest-writer")]
    if "feeds" in daemon.roles:
        now = wall_clock_us()
        await ingest.submit([ev.PriceUpdated(event_id=f"fixed:{sym}:{price}", ts_event=now,
                                             ts_ingest=now, symbol=sym, price=price, source="fixed")
                             for sym, price in sorted(cfg.feeds.fixed_prices.items())])
        for src in cfg.feeds.sources:
            feed = ingest.price_feed(WsConfig(src.url, subscribe=subscriptions(src)),
                                     src.source_name, parser_for(src))
            tasks.append(daemon._spawn(feed.run(), f"feed-{src.source_name}"))
        interval = max(cfg.feeds.staleness_ms / 4000, 0.05)
        tasks.append(daemon._spawn(ingest.watch_stale(interval), "stale-watchdog"))
    if "ingest" in daemon.roles and cfg.feeds.accounts_url:
        tasks.append(daemon._spawn(AccountStream(cfg.feeds.accounts_url, ingest).run(),
                                   "account-stream"))
    return tasks


async def _start_admin(daemon: Daemon, client: RedisClient, host: ShardHost | None) -> Any:
    from keeper.app.admin import AdminServer, build_admin_app
    from keeper.app.shard_status import ShardedStatus

    cfg = daemon.config
    status = ShardedStatus(client, cfg.keeper.shards, daemon.metrics, host=host,
                           running=daemon.roles_running, mode=cfg.keeper.mode,
                           roles=list(daemon.roles), feeds=len(cfg.feeds.sources),
                           staleness_s=cfg.feeds.staleness_ms / 1000)
    app = build_admin_app(status, cfg.secrets.admin_token, config=cfg,
                          request_timeout_s=cfg.admin.request_timeout_s)
    server = AdminServer(app, cfg.admin.host, cfg.admin.port)
    daemon.admin_port = await server.start()
    return server


async def run_sharded(daemon: Daemon, stop: asyncio.Event, url: str) -> None:
    """Run the sharded mode until ``stop`` (module docstring); raises what a task raised."""

    check_sharded(daemon)
    cfg = daemon.config
    shards = cfg.keeper.shards
    client = await open_client(url)
    writer = ShardedLog(client, shards)
    intake: list[asyncio.Task[Any]] = []
    executor: VenueExecutor | None = None
    host: ShardHost | None = None
    leases: asyncio.Task[None] | None = None
    leases_stop = asyncio.Event()
    admin: Any = None
    try:
        if "feeds" in daemon.roles or "ingest" in daemon.roles:
            intake = await _intake(daemon, writer)
        if "keeper" in daemon.roles:
            executor = build_executor(cfg)
            replicas = wait_replicas_for(cfg.keeper.wait_replicas, url)
            host = ShardHost(client, shards, shard_parts(daemon, executor, replicas),
                             ttl_ms=cfg.keeper.lease_ttl_ms)
            daemon.shard_host = host
            leases = daemon._spawn(host.run(leases_stop), "shard-leases")
        if "admin" in daemon.roles and cfg.admin.enabled:
            admin = await _start_admin(daemon, client, host)
        _log.info("sharded_started", shards=shards, roles=list(daemon.roles),
                  holder=host.holder if host else None, cluster=is_cluster_url(url))
        daemon.started.set()
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, *daemon._tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        daemon._intake_stop.set()
        await cancel_all(intake, 5.0)
        if daemon.ingest is not None:
            await bounded(daemon.ingest.drain(), 5.0, "ingest_drain")
            await daemon.ingest.close()
        leases_stop.set()
        if leases is not None:
            await asyncio.wait([leases], timeout=30.0)
        await cancel_all([t for t in daemon._tasks if not t.done()], 5.0)
        if admin is not None:
            await bounded(admin.stop(), 5.0, "admin_stop")
        if executor is not None:
            await bounded(executor.close(), 5.0, "executor_close")
        await bounded(writer.close(), 5.0, "close")
        await bounded(client.aclose(), 5.0, "close")
        _log.info("sharded_stopped", shards=shards)
    for t in daemon._tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
