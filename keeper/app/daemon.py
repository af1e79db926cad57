"""The daemon (``keeper run``): every role of the keeper in one asyncio process, or a subset.

Roles (``ROLES``), each a set of tasks on one event loop, all sharing one Redis log:

- ``feeds``: the price websockets of ``[feeds.sources]`` through one ``PricePipeline`` (symbol
  map, guards, staleness watchdog) into an ``Ingest`` writer; the ``fixed_prices`` once.
- ``ingest``: the venue's account stream (``feeds.accounts_url``) into the same writer.
- ``keeper``: one ``Projector`` driving a ``KeeperCore`` per profile (``keeper.profile`` plus
  ``extra_profiles``), appending intents (the outbox) with ``ts_ingest`` stamped.
- ``executor``: the ``Runner`` submitting live intents through the configured executor; with the
  ``keeper`` role in the same process it also takes each intent as soon as it is recorded
  (``Runner.offer``), ahead of its consumer group.
- ``projector``: a plain state projection with its own snapshots (for a separate admin).
- ``admin``: the admin HTTP server over ``keeper.app.status.Status``.

Crash-only: starting is recovering. The projector loads its newest valid snapshot and replays
the tail; the runner reclaims its own pending entries under its stable consumer name. Shutdown
(``stop`` set, e.g. by SIGTERM): intake stops first (feeds and account stream cancelled, the
writer drained), then the keeper applies what is in the log and writes a final snapshot, the
runner finishes the batch in hand (unacked entries are handed back to the group), admin last.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from keeper import _compiled
from keeper.aio import wait_event
from keeper.app.config import Config
from keeper.app.executors import build_executor
from keeper.app.feeds_role import build_pipeline, parser_for, subscriptions
from keeper.app.freshness import FreshnessGuard
from keeper.app.heap import settle_heap
from keeper.app.keeper_role import core_factory
from keeper.app.metrics import Metrics
from keeper.app.retention_role import archived, capped_reader, catch_up_archived, retain
from keeper.app.stamping import CountingSink, StampingLog
from keeper.app.status import Sampler, Status
from keeper.app.supervise import bounded, cancel_all, ride_through
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.domain.chain_core import ChainCore
from keeper.domain.cores import fmt_of
from keeper.domain.decide import KeeperCore, KeeperParams
from keeper.errors import ConfigError, EmbeddedRedisError
from keeper.execution.base import VenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.feeds.ingest import Ingest
from keeper.feeds.pipeline import PricePipeline
from keeper.feeds.ws import WsConfig
from keeper.ingest.account_ws import AccountStream
from keeper.ports import LogEntry
from keeper.projector import ProjectionCore, Projector
from keeper.replay.manifest import RunManifest
from keeper.store import health
from keeper.store.embedded import EmbeddedRedis, open_redis
from keeper.store.entries import parse_id
from keeper.store.redis_log import RedisEventLog, make_client
from keeper.store.retention import PassReport
from keeper.store.snapshots import RedisSnapshotStore

if TYPE_CHECKING:
    from keeper.chain.ingest import ChainIngest

_log = structlog.get_logger()

ROLES = ("feeds", "ingest", "keeper", "executor", "projector", "admin")
DEFAULT_ROLES = ("feeds", "ingest", "keeper", "executor", "admin")
"""``keeper run`` without ``--role``: ``projector`` is left out (the keeper projects itself)."""

EMBEDDED_CHECK_S = 0.5
"""How often the daemon checks that its private redis-server is alive."""
SHUTDOWN_STEP_S = 5.0
"""The most one step of the shutdown waits (a snapshot, closing a connection, a task's end)."""

class Daemon:
    """The keeper process. ``run(stop)`` runs ``roles`` until ``stop`` is set, then shuts down
    gracefully (see the module docstring) and returns. ``consumer`` names this process in the
    executor group and in claims: keep it stable across restarts (default: ``<host>-executor``).
    """

    def __init__(self, config: Config, *, roles: Sequence[str] | None = None,
                 consumer: str | None = None, extra_profiles: Sequence[str] = (),
                 block_ms: int = 100) -> None:
        roles = tuple(roles) if roles else DEFAULT_ROLES
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ConfigError(f"--role: unknown role {bad[0]!r}; known: {', '.join(ROLES)}")
        self.config = config
        self.roles = roles
        self.consumer = consumer or f"{socket.gethostname()}-executor"
        self.profiles = tuple(dict.fromkeys((config.keeper.profile, *extra_profiles)))
        self.block_ms = min(block_ms, config.redis.block_ms)
        self.metrics = Metrics()
        self.redis_url = ""
        self.ingest: Ingest | None = None
        self.pipeline: PricePipeline | None = None
        self.projectors: list[Projector] = []
        self.runner: Runner | None = None
        self._keeper_logs: list[StampingLog] = []
        """The keeper projectors' logs: they hand their live intents to this process's runner."""
        self.chain_ingest: ChainIngest | None = None
        self._intake_stop = asyncio.Event()
        self.log: RedisEventLog | None = None
        self.admin_port: int | None = None
        self.sampler: Sampler | None = None
        """The admin role's metrics sampler (log lag, buckets at risk, dead letters)."""
        self.sample_interval_s = 0.5
        self.manifest: RunManifest | None = None
        """This run's manifest as last written (None before the keeper role started)."""
        self.started = asyncio.Event()
        """Set once every role is up (the admin port bound, projectors started)."""
        self._tasks: list[asyncio.Task[Any]] = []
        self._aux: list[asyncio.Task[Any]] = []
        self.retention_report: PassReport | None = None
        """The last retention pass's ``PassReport`` (None before the first)."""
        self._closers: list[Any] = []
        self.shard_host: Any = None
        """The sharded mode's ``keeper.app.shard_worker.ShardHost`` (None with one shard)."""

    def params(self, profile: str) -> KeeperParams:
        return msgspec.structs.replace(self.config.keeper_params(), profile=profile)

    def keeper_projectors(self) -> list[Projector]:
        return [p for p in self.projectors if isinstance(p.core, KeeperCore | ChainCore)]

    def cores(self) -> list[KeeperCore]:
        """The live keeper cores (one per profile), once started."""
        return [p.core for p in self.projectors if isinstance(p.core, KeeperCore)]

    def roles_running(self) -> bool:
        """No role's task has ended (the first that ends ends the run)."""
        return not any(t.done() for t in self._tasks)

    def _retained(self, report: PassReport) -> None:
        self.retention_report = report

    def _connect(self) -> RedisEventLog:
        """A log on its own client. Nothing is sent yet: the roles that use it ride out a Redis
        that is down (``keeper.app.supervise``), at start as later."""
        log = RedisEventLog(make_client(self.redis_url), shard=str(self.config.keeper.shard),
                            owns_client=True, url=self.redis_url)
        self._closers.append(log.close)
        return log

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)
        return task

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``; raises what a role raised (after shutting the others down).

        Redis being down or refusing writes ends nothing: the admin server answers from the
        start (``/readyz`` says what waits), and every role waits Redis out and goes on.
        """
        cfg = self.config
        data_dir = Path(cfg.redis.data_dir)
        url, server = await open_redis(cfg.redis_url(), data_dir, appendfsync=cfg.redis.appendfsync)
        self.redis_url = url
        if cfg.keeper.sharded:  # the sharded mode: keeper.app.sharded
            from keeper.app.sharded import run_sharded
            try:
                await run_sharded(self, stop, url)
            finally:
                if server is not None:
                    server.stop()
            return
        _log.info("daemon_starting", roles=list(self.roles), profiles=list(self.profiles),
                  mode=cfg.keeper.mode, executor=cfg.execution.executor, pid=os.getpid(),
                  redis="embedded" if server else "external", compiled=_compiled.compiled())
        intake: list[asyncio.Task[Any]] = []
        workers: list[asyncio.Task[Any]] = []
        inner_stop = asyncio.Event()
        admin = None
        executor = None
        try:
            if server is not None:
                self._aux.append(asyncio.ensure_future(self._keep_embedded(server, stop)))
            self.log = self._connect()
            if "admin" in self.roles and cfg.admin.enabled:
                admin = await self._start_admin()  # first: it answers while the rest waits
            if "feeds" in self.roles or "ingest" in self.roles:
                intake = await self._start_intake()
            if "keeper" in self.roles or "projector" in self.roles:
                self._start_projectors(inner_stop, workers)
            if "executor" in self.roles:
                executor = await self._build_executor(stop)
                if executor is not None:
                    self._start_runner(executor, inner_stop, workers)
            # not a role (it ends once done): outside ``_tasks``, whose first end ends the run
            announce = asyncio.ensure_future(self._announce(stop))
            self._aux.append(announce)
            if "keeper" in self.roles and cfg.retention.enabled and cfg.retention.in_daemon:
                self._aux.append(asyncio.ensure_future(
                    retain(cfg, self._connect(), self.metrics, self._intake_stop, self._retained)))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            failed = [t for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                _log.error("role_failed", task=failed[0].get_name(), error=repr(failed[0].exception()))
        finally:
            await self._shutdown(intake, workers, inner_stop, admin, executor)
            if server is not None:
                server.stop()
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def _keep_embedded(self, server: EmbeddedRedis, stop: asyncio.Event) -> None:
        """The private redis-server is this process's child: if it dies (killed, out of memory),
        start it again on the same port and data folder (its AOF restores the log) while the
        roles wait it out. An external Redis is its operator's to restart."""
        attempt = 0
        while not await wait_event(stop, EMBEDDED_CHECK_S):
            if server.running():
                attempt = 0
                continue
            attempt += 1
            _log.error("embedded_redis_died", port=server.port, attempt=attempt)
            try:
                await asyncio.to_thread(server.start)
            except EmbeddedRedisError as exc:
                _log.error("embedded_redis_restart_failed", error=str(exc)[:500])
                await wait_event(stop, min(2.0 * attempt, 30.0))

    async def _announce(self, stop: asyncio.Event) -> None:
        """Once every projector has started (restored its snapshot): the run manifest, then
        ``started``."""
        while any(p.core is None for p in self.projectors):
            if await wait_event(stop, 0.02):
                return
        await ride_through("manifest", lambda: self._write_manifest("running"), stop)
        self.started.set()
        _log.info("daemon_started", roles=list(self.roles), admin_port=self.admin_port,
                  restored_from=[p.restored_from for p in self.projectors])

    async def _shutdown(self, intake: list[asyncio.Task[Any]], workers: list[asyncio.Task[Any]],
                        inner_stop: asyncio.Event, admin: Any, executor: Any) -> None:
        """Every step is bounded: a shutdown never waits on Redis or a task that ignores its
        cancellation (such a task is named in the log with where it is stuck)."""
        self._intake_stop.set()  # 1. stop intake
        await cancel_all(intake, SHUTDOWN_STEP_S)
        if self.ingest is not None:
            await bounded(self.ingest.drain(), 5.0, "ingest_drain")
            await self.ingest.close()
        inner_stop.set()  # 2. keeper and runner finish their batch, snapshot
        if workers:
            await asyncio.wait(workers, timeout=10.0)
        await cancel_all(workers, SHUTDOWN_STEP_S)
        for p in self.projectors:
            await bounded(p.snapshot(), SHUTDOWN_STEP_S, f"snapshot_{p.name}")
        await bounded(self._write_manifest("stopped"), SHUTDOWN_STEP_S, "manifest")
        await cancel_all([t for t in (*self._tasks, *self._aux) if not t.done()], SHUTDOWN_STEP_S)
        if admin is not None:  # 3. admin last: it answers until the end
            await bounded(admin.stop(), SHUTDOWN_STEP_S, "admin_stop")
        if executor is not None:
            await bounded(executor.close(), SHUTDOWN_STEP_S, "executor_close")
        for close in reversed(self._closers):
            await bounded(close(), SHUTDOWN_STEP_S, "close")
        _log.info("daemon_stopped", applied=[p.applied for p in self.projectors],
                  offsets=[p.core.offset if p.core else None for p in self.projectors],
                  runner=dict(self.runner.counts) if self.runner else None)

    async def _write_manifest(self, status: str) -> None:
        """The run manifest (``keeper.replay.manifest``) in the shard's manifest hash: every
        keeper core (projector name, params), the config hash, version, the log range covered.
        At start (``running``) ``log_first`` is the first entry the cores will apply (None on an
        empty log); at shutdown (``stopped``) ``log_last`` is where they stopped."""
        from keeper.replay import manifest as mf

        projs = self.keeper_projectors()
        if not projs or self.log is None:
            return
        log = self.log
        start = min((p.restored_from or "0-0" for p in projs), key=parse_id)
        first = self.manifest.log_first if self.manifest is not None else None
        if first is None:
            raw: Any = await log.client.xrange(log.key, min=f"({start}" if start != "0-0" else "-",
                                               count=1)
            first = raw[0][0].decode() if raw else None
        stopped = status == "stopped"
        last = min((p.core.offset for p in projs if p.core is not None), key=parse_id) if stopped \
            else None
        named = [(p.name, p.core.params) for p in projs if isinstance(p.core, KeeperCore | ChainCore)]
        now = wall_clock_us()
        m = mf.live_manifest(
            named, source=log.key, first=first, last=None if last == "0-0" else last,
            entries=projs[0].applied, decisions=sum(p.appended for p in projs), status=status,
            started_us=self.manifest.started_us if self.manifest is not None else now,
            stopped_us=now if stopped else None, config_files=self.config.sources)
        await mf.write_redis(log.client, m, shard=str(self.config.keeper.shard))
        self.manifest = m
        _log.info("run_manifest_written", status=status, config_hash=m.config_hash[:12],
                  cores=[n for n, _ in named], log_first=m.log_first, log_last=m.log_last)

    async def _build_executor(self, stop: asyncio.Event) -> VenueExecutor | None:
        cfg = self.config
        if cfg.execution.executor == "chain" and cfg.keeper.mode == "live":
            from keeper.app.chain_role import start_chain_executor

            log = self._connect()
            built: list[VenueExecutor] = []

            async def start() -> None:  # it reads its signed transactions back: the whole log
                built.append(await start_chain_executor(cfg, await archived(self.config, log)))

            await ride_through("chain-executor", start, stop)
            return built[0] if built else None
        return build_executor(cfg)

    async def _start_intake(self) -> list[asyncio.Task[Any]]:
        cfg = self.config
        assert self.log is not None
        if cfg.venue.kind == "evm":
            return await self._start_chain_intake()
        self.pipeline = build_pipeline(cfg)
        self.ingest = Ingest(CountingSink(self.log, self.metrics),
                             pipeline=self.pipeline, max_pending=10_000)
        tasks = [self._spawn(self.ingest.run(), "ingest-writer")]
        if "feeds" in self.roles:
            now = wall_clock_us()
            fixed = [ev.PriceUpdated(event_id=f"fixed:{sym}:{price}", ts_event=now, ts_ingest=now,
                                     symbol=sym, price=price, source="fixed")
                     for sym, price in sorted(cfg.feeds.fixed_prices.items())]
            await self.ingest.submit(fixed)
            for src in cfg.feeds.sources:
                feed = self.ingest.price_feed(WsConfig(src.url, subscribe=subscriptions(src)),
                                              src.source_name, parser_for(src))
                tasks.append(self._spawn(feed.run(), f"feed-{src.source_name}"))
            interval = max(cfg.feeds.staleness_ms / 4000, 0.05)
            tasks.append(self._spawn(self.ingest.watch_stale(interval), "stale-watchdog"))
        if "ingest" in self.roles and cfg.feeds.accounts_url:
            stream = AccountStream(cfg.feeds.accounts_url, self.ingest)
            tasks.append(self._spawn(stream.run(), "account-stream"))
        return tasks

    async def _start_chain_intake(self) -> list[asyncio.Task[Any]]:
        """A chain venue: its ingest (logs, block frames) is the intake; prices come with it."""
        from keeper.app.chain_role import start_chain_ingest

        if "ingest" not in self.roles:
            return []
        log = self._connect()
        # it resumes after the log's last block frame: through the archive once retention has
        # trimmed the frames it would look for
        self.chain_ingest = await start_chain_ingest(self.config, await archived(self.config, log))
        self._closers.append(self.chain_ingest.rpc.close)
        ingest = self.chain_ingest
        # stopped first at shutdown, with the other intake (and cancelled with it); its start
        # resumes from the log, so a Redis fault is ridden out by running it again
        return [self._spawn(ride_through("chain-ingest", lambda: ingest.run(self._intake_stop),
                                         self._intake_stop), "chain-ingest")]

    def _start_projectors(self, stop: asyncio.Event, workers: list[asyncio.Task[Any]]) -> None:
        cfg = self.config
        shard = str(cfg.keeper.shard)
        log = self._connect()  # the projectors' blocking reads get their own connection
        reading = capped_reader(cfg, log)  # through the archive when a hard cap may pass them
        if "keeper" in self.roles:
            for k, profile in enumerate(self.profiles):
                params = self.params(profile)
                snaps = RedisSnapshotStore(log.client, shard=shard, format=fmt_of(params))
                stamping = StampingLog(reading, self.metrics, count_applied=k == 0)
                self._keeper_logs.append(stamping)
                p = Projector(stamping, snaps,
                              core_factory(params),  # type: ignore[arg-type]
                              name=f"keeper-{profile}", fmt=fmt_of(params),
                              batch=cfg.keeper.batch_size, snapshot_every=cfg.snapshots.every_events,
                              snapshot_interval_s=cfg.snapshots.interval_s, stream=True)
                if cfg.venue.kind != "evm":  # chain prices come with their blocks' own time
                    stamping.guard = FreshnessGuard(
                        cfg.feeds.staleness_ms * 1000, lambda p=p: getattr(p.core, "state", None),  # type: ignore[misc]
                        fixed=cfg.feeds.fixed_prices)
                self.projectors.append(p)
        if "projector" in self.roles:
            snaps = RedisSnapshotStore(log.client, shard=shard, format=ProjectionCore.FORMAT)
            self.projectors.append(Projector(StampingLog(reading, self.metrics,
                                                         count_applied=not self.projectors), snaps,
                                             _projection_factory, name="state",
                                             batch=cfg.keeper.batch_size,
                                             snapshot_every=cfg.snapshots.every_events,
                                             snapshot_interval_s=cfg.snapshots.interval_s))
        for p in self.projectors:
            name = f"projector-{p.name}"
            workers.append(self._spawn(ride_through(name, lambda p=p: self._follow(p, stop),  # type: ignore[misc]
                                                    stop), name))

    async def _follow(self, p: Projector, stop: asyncio.Event) -> None:
        """Start (restore the snapshot: recovery), then apply the log until ``stop``; run again
        by ``ride_through`` after a Redis fault (the projector holds what it could not append)."""
        name = f"projector-{p.name}"
        if p.core is None:
            await p.start()
            _log.info("projector_started", projector=p.name, restored_from=p.restored_from,
                      offset=p.position)
            await catch_up_archived(self.config, p)
            await p.catch_up()
            settle_heap(f"projector {p.name} caught up")  # the book loaded: out of the collector's way
        while not stop.is_set():
            await p.step(block_ms=self.block_ms)
            health.REDIS.recovered(name)
        await p.catch_up()  # the batch in hand and anything the drained intake wrote
        await p.snapshot()

    def _start_runner(self, executor: VenueExecutor, stop: asyncio.Event,
                      workers: list[asyncio.Task[Any]]) -> None:
        cfg = self.config
        log = self._connect()
        # reads of 1,000 entries: a burst's intents, sends and outcomes pass through this group
        self.runner = Runner(log, Claims(log.client, ttl_ms=30_000), executor, consumer=self.consumer,
                             intent_ttl_us=round(cfg.execution.intent_ttl_s * 1_000_000), batch=1000)
        workers.append(self._spawn(self.runner.run(stop, block_ms=self.block_ms), "runner"))
        for stamping in self._keeper_logs:  # the keeper role in this process: hand intents over
            stamping.handoff = self.runner.offer

    async def _start_admin(self) -> Any:
        from keeper.app.admin import AdminServer, build_admin_app

        cfg = self.config
        assert self.log is not None
        status = Status(self, self.log)
        self.sampler = Sampler(self, self.log)
        # cancelled at shutdown with the other tasks (admin answers until the end)
        self._spawn(self.sampler.run(asyncio.Event(), self.sample_interval_s), "metrics-sampler")
        app = build_admin_app(status, cfg.secrets.admin_token, config=cfg,
                              request_timeout_s=cfg.admin.request_timeout_s)
        server = AdminServer(app, cfg.admin.host, cfg.admin.port)
        self.admin_port = await server.start()
        return server


def _projection_factory(data: bytes | None) -> ProjectionCore:
    return ProjectionCore() if data is None else ProjectionCore.restore(data)


async def read_all(log: RedisEventLog, batch: int = 5000) -> list[LogEntry]:
    """Every decodable entry of ``log`` in order (for reports; bounded by the log's length)."""
    out: list[LogEntry] = []
    after = "0-0"
    while True:
        entries, pos = await log.read_batch(after, batch)
        if pos == after:
            return out
        out += entries
        after = pos


__all__ = ["DEFAULT_ROLES", "ROLES", "Daemon", "EmbeddedRedis", "build_executor", "read_all"]
