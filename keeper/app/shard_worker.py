"""One process's shards in the daemon's sharded mode: a worker for each shard it holds a lease on.

``ShardHost`` keeps the leases (``keeper.store.lease_keeper.LeaseKeeper`` over shards ``0`` ..
``S-1``, under a holder name unique to this process incarnation: host, PID, start time). For
each lease acquired it starts a ``ShardWorker`` (after this process's previous worker of that
shard, if one is still stopping, has ended); a lease released or lost stops it.

``ShardWorker`` acts for one shard under one grant of its lease:

- **its log**: ``RedisEventLog(client, shard=S)`` with ``log.fence`` set to the grant's fence,
  so every append it makes (the keeper's intents and dead letters, the runner's submissions,
  outcomes and the venue's account events) is applied only while that grant is the shard's
  lease, checked in the append's own script (``keeper.errors.LeaseLost`` otherwise); with
  ``ShardParts.wait_replicas`` > 0 a ``keeper.store.replicated.ReplicatedLog``: nothing read is
  acted on, and no append of the worker counts as done, before that many replicas hold it;
- **its keeper**: the projectors ``ShardParts.projectors`` builds on that log, each started from
  the shard's newest snapshot and its tail (``Projector.start``): a takeover is a restart, the
  same crash-only path;
- **its runner**: ``ShardParts.runner`` on the same log, with ``Claims(client, shard=S)`` and a
  consumer named after the shard, not the process (``consumer_of``): a new owner reads the
  previous owner's pending entries as its own and takes its claims back at once, exactly as a
  runner restarted under its stable name does (``Runner.start``); its group reads answer empty
  once the lease is not held (``OwnedLog``). Its executor is wrapped in
  ``OwnedExecutor``: no venue submission leaves unless ``owns(S)`` holds at that moment (else a
  ``TransientError``: the intent stays pending, unsent). A request already in flight when the
  lease lapses is covered by the claims and the venue's idempotency key (the new owner resends
  under the same key; the venue answers "duplicate").

Stopping. **Released** (a rebalance, the shutdown): the projectors finish the batch in hand and
write a final snapshot while the lease is still held (the release waits for that, at most
``stop_timeout_s`` or a third of the TTL), the runner finishes what is in flight (its executor
already refuses new sends: ``owns`` is false from the moment the release starts). **Lost** (a
renewal refused, local validity over, or an append refused with ``LeaseLost``): every task is
cancelled at once and nothing more is recorded (no snapshot; appends would be refused anyway).
A Redis fault (any other ``LogError``) is waited out with backoff, as the single-shard daemon's
roles do, while the lease lasts; a worker that ends by itself (a part failed: logged as
``shard_part_failed``) while its grant is held is started again after a backoff, from the
shard's snapshot and tail like any start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from keeper.aio import wait_event
from keeper.app.heap import settle_heap
from keeper.backoff import jittered_backoff
from keeper.domain.events import Decision
from keeper.errors import LeaseLost, LogError, TransientError
from keeper.execution.base import Submission, VenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.runner import Runner
from keeper.ports import LogEntry
from keeper.projector import Projector
from keeper.store.lease_keeper import LeaseKeeper
from keeper.store.leases import Lease, ShardLeases
from keeper.store.membership import Membership, shard_names
from keeper.store.redis_log import RedisEventLog
from keeper.store.replicated import ReplicatedLog
from keeper.store.slotconn import RedisClient

__all__ = ["OwnedExecutor", "OwnedLog", "ShardHost", "ShardParts", "ShardWorker", "consumer_of",
           "holder_name"]

_log = structlog.get_logger()

ProjectorsFactory = Callable[[RedisEventLog, str], list[Projector]]
"""The keeper projectors of one shard, on its (fenced) log."""
RunnerFactory = Callable[[RedisEventLog, Claims, VenueExecutor, str], Runner]
"""The runner of one shard: its log, its claims, the owned executor, its consumer name."""


def holder_name(prefix: str = "keeper") -> str:
    """A lease holder name unique to this process incarnation: host, PID and start time (ms)."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{time.time_ns() // 1_000_000}"


def consumer_of(shard: str) -> str:
    """The runner's consumer (and claim owner) name of a shard: the same in every owner."""
    return f"shard-{shard}"


class OwnedLog(ReplicatedLog):
    """A shard's log whose consumer-group reads (``read_group``, ``read_pending``,
    ``claim_stale``) answer empty, without asking Redis, unless ``owns()``: the runner's consumer
    is the shard's, so a process that lost the lease (paused, then resumed) must not take
    entries out of the group that the new owner would then not see until they go stale.
    ``wait_replicas`` > 0: it acts only on what that many replicas hold
    (``keeper.store.replicated``)."""

    def __init__(self, client: RedisClient, *, owns: Callable[[], bool], shard: str,
                 prefix: str = "keeper", wait_replicas: int = 0) -> None:
        super().__init__(client, shard=shard, prefix=prefix, wait_replicas=wait_replicas)
        self.owns = owns

    async def read_group(self, group: str, consumer: str, count: int = 100,
                         block_ms: int | None = None) -> list[LogEntry]:
        if not self.owns():
            await asyncio.sleep((block_ms or 0) / 1000)
            return []
        return await super().read_group(group, consumer, count, block_ms)

    async def read_pending(self, group: str, consumer: str, count: int = 100) -> list[LogEntry]:
        return await super().read_pending(group, consumer, count) if self.owns() else []

    async def claim_stale(self, group: str, consumer: str, min_idle_ms: int, count: int = 100
                          ) -> list[LogEntry]:
        if not self.owns():
            return []
        return await super().claim_stale(group, consumer, min_idle_ms, count)


class OwnedExecutor:
    """``inner`` behind a check, before every submission, that this process owns ``shard``;
    everything else (``status``, ``markets``, ``batch_url``, ``name``) is the inner executor's."""

    def __init__(self, inner: VenueExecutor, owns: Callable[[], bool], shard: str) -> None:
        self.inner = inner
        self.owns = owns
        self.shard = shard
        self.name = inner.name
        self.refused = 0

    def _check(self) -> None:
        if not self.owns():
            self.refused += 1
            raise TransientError(f"shard {self.shard}: the lease is not held; nothing sent")

    async def execute(self, decision: Decision) -> Submission:
        self._check()
        return await self.inner.execute(decision)

    async def execute_many(self, decisions: list[Decision]) -> list[Any]:
        try:
            self._check()
        except TransientError as exc:  # each item unanswered: left pending, unsent
            return [exc] * len(decisions)
        many = self.inner.execute_many  # type: ignore[attr-defined]
        return list(await many(decisions))

    async def submit(self, decision: Decision) -> tuple[str | None, bool]:
        self._check()
        return await self.inner.submit(decision)

    async def close(self) -> None:
        """Nothing: the inner executor is shared by the shards and closed by its owner."""

    def __getattr__(self, name: str) -> Any:
        # the runner sends batches only where the inner executor has a ``batch_url``
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


@dataclass(frozen=True)
class ShardParts:
    """How a worker builds its shard's parts; ``runner``/``executor`` None: no executor role
    (paper mode)."""

    projectors: ProjectorsFactory
    runner: RunnerFactory | None = None
    executor: VenueExecutor | None = None
    block_ms: int = 100
    stop_timeout_s: float = 5.0
    wait_replicas: int = 0
    """Replicas that must hold an entry before the worker acts on it or counts its own append
    as done (``keeper.store.replicated``; ``[keeper] wait_replicas``)."""
    catch_up: Callable[[Projector], Awaitable[None]] | None = None
    """Right after a projector started: what it must read from the archive first (a start
    below what retention trimmed)."""
    started: Callable[[RedisEventLog, list[Projector]], Awaitable[None]] | None = None
    """Called once every projector of the worker has started (restored): the run manifest."""
    retention: Callable[[RedisEventLog, asyncio.Event], Awaitable[None]] | None = None
    """Retention passes on the shard's log until the event is set (``[retention]`` with
    ``in_daemon``): run by the shard's owner, which writes the snapshots that pin them."""


class ShardWorker:
    """Acts for ``lease.shard`` while ``owns()`` (module docstring). ``run`` returns when it
    stopped; ``lost`` says whether it ended because the lease was lost."""

    def __init__(self, client: RedisClient, lease: Lease, parts: ShardParts,
                 owns: Callable[[], bool], *, prefix: str = "keeper") -> None:
        self.client = client
        self.lease = lease
        self.shard = lease.shard
        self.parts = parts
        self.owns = owns
        self.prefix = prefix
        self.stop = asyncio.Event()
        self.lost = False
        self.requested = False
        """Asked to stop (``request_stop``): it ends for good, not to be restarted."""
        self.log: RedisEventLog | None = None
        self.projectors: list[Projector] = []
        self.runner: Runner | None = None
        self.started_at = time.monotonic()
        self.first_decision_at: float | None = None
        """When (monotonic) this worker's keeper first appended a decision (for the bench)."""
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        """Every projector has started (restored from the snapshot)."""

    def request_stop(self) -> None:
        """Stop gracefully (a release, the shutdown): final snapshot while the lease is held."""
        self.requested = True
        self.stop.set()

    def unreplicated(self) -> str | None:
        """Why the shard waits for a replica now (``ReplicatedLog.waiting``), else None."""
        return self.log.waiting() if isinstance(self.log, ReplicatedLog) else None

    def lose(self) -> None:
        """Stop at once, recording nothing more (the lease is gone)."""
        self.lost = True
        self._lost.set()
        self.stop.set()

    async def run(self) -> None:
        log = OwnedLog(self.client, owns=self.owns, shard=self.shard, prefix=self.prefix,
                       wait_replicas=self.parts.wait_replicas)
        log.fence = self.lease.fence
        self.log = log
        tasks: list[asyncio.Task[None]] = []
        try:
            self.projectors = self.parts.projectors(log, self.shard)
            tasks = [asyncio.ensure_future(self._follow(p)) for p in self.projectors]
            if self.parts.runner is not None and self.parts.executor is not None:
                x = OwnedExecutor(self.parts.executor, self.owns, self.shard)
                claims = Claims(self.client, shard=self.shard, prefix=self.prefix)
                self.runner = self.parts.runner(log, claims, x, consumer_of(self.shard))
                tasks.append(asyncio.ensure_future(self.runner.run(self.stop, self.parts.block_ms)))
            if self.parts.started is not None:
                tasks.append(asyncio.ensure_future(self._started(log)))
            if self.parts.retention is not None:  # on a plain log of its own: no read barrier
                plain = RedisEventLog(self.client, shard=self.shard, prefix=self.prefix)
                tasks.append(asyncio.ensure_future(self._retain(plain)))
            _log.info("shard_worker_started", shard=self.shard, grant=self.lease.token,
                      projectors=[p.name for p in self.projectors], runner=self.runner is not None)
            lost = asyncio.ensure_future(self._lost.wait())
            await asyncio.wait([lost, *tasks], return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            if not self.lost:  # released (or a task ended): finish the batch in hand, bounded
                self.stop.set()
                await asyncio.wait(tasks, timeout=self.parts.stop_timeout_s)
        finally:
            for t in tasks:
                t.cancel()
            for res in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(res, Exception):
                    _log.error("shard_part_failed", shard=self.shard, error=f"{type(res).__name__}: {res}")
            await log.close()
            _log.info("shard_worker_stopped", shard=self.shard, grant=self.lease.token, lost=self.lost,
                      applied=[p.applied for p in self.projectors],
                      runner=dict(self.runner.counts) if self.runner else None)

    async def _started(self, log: RedisEventLog) -> None:
        """``parts.started`` once every projector has a core; a failure is logged (the run
        manifest is for replay, not for acting)."""
        assert self.parts.started is not None
        await self._ready.wait()
        try:
            await self.parts.started(log, self.projectors)
        except Exception as exc:
            _log.warning("shard_manifest_failed", shard=self.shard, error=f"{type(exc).__name__}: {exc}")
        await self.stop.wait()

    async def _retain(self, log: RedisEventLog) -> None:
        assert self.parts.retention is not None
        try:
            await self.parts.retention(log, self.stop)
        finally:
            await log.close()

    async def _follow(self, p: Projector) -> None:
        """Start from the snapshot and tail, then apply the log until ``stop``; a final snapshot
        only while the lease is held. ``LeaseLost`` ends the worker; other ``LogError``s are
        waited out with backoff (the projector holds what it could not append)."""
        delay = jittered_backoff(0.1, 5.0)
        attempt = 0
        while not self.stop.is_set():
            try:
                if p.core is None:
                    await p.start()
                    _log.info("projector_started", projector=p.name, shard=self.shard,
                              restored_from=p.restored_from, offset=p.position)
                    if self.parts.catch_up is not None:
                        await self.parts.catch_up(p)
                    settle_heap(f"shard {self.shard}: projector {p.name} started")
                    if all(q.core is not None for q in self.projectors):
                        self._ready.set()
                while not self.stop.is_set():
                    if not self.owns():  # resumed past the lease: decide nothing more
                        self.lose()      # (the fence would refuse its appends anyway)
                        return
                    before = p.appended
                    await p.step(block_ms=self.parts.block_ms)
                    if p.appended > before and self.first_decision_at is None:
                        self.first_decision_at = time.monotonic()
                    attempt = 0
                if not self.lost:  # released: the grant is still the shard's lease until
                    # the release follows this stop (LeaseKeeper tells on_released first)
                    await p.catch_up()
                    await p.snapshot()
                return
            except LeaseLost as exc:
                _log.warning("shard_append_refused", shard=self.shard, grant=self.lease.token,
                             projector=p.name, error=str(exc)[:300])
                self.lose()
                return
            except LogError as exc:
                attempt += 1
                _log.warning("shard_waiting_for_redis", shard=self.shard, projector=p.name,
                             attempt=attempt, error=str(exc)[:300])
                await wait_event(self.stop, delay(attempt))


class ShardHost:
    """The shards this process owns, each with its worker (module docstring). ``run(stop)``
    keeps the leases until ``stop``, then releases them (each worker stopped first)."""

    def __init__(self, client: RedisClient, shards: int, parts: ShardParts, *,
                 ttl_ms: int = 10_000, holder: str | None = None, prefix: str = "keeper") -> None:
        self.client = client
        self.parts = parts
        self.prefix = prefix
        self.holder = holder or holder_name(prefix)
        self.keeper = LeaseKeeper(ShardLeases(client, prefix=prefix, ttl_ms=ttl_ms),
                                  Membership(client, prefix=prefix, ttl_ms=ttl_ms),
                                  shard_names(shards), self.holder, on_acquired=self._acquired,
                                  on_released=self._released, on_lost=self._lost)
        self.workers: dict[str, ShardWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.acquired_at: dict[str, float] = {}
        """Shard -> when (monotonic) this process last acquired it."""

    def owns(self, shard: str) -> bool:
        return self.keeper.owns(shard)

    def _acquired(self, lease: Lease) -> None:
        shard = lease.shard
        self.acquired_at[shard] = time.monotonic()
        worker = self._worker(lease)
        prior = self.tasks.get(shard)
        self.tasks[shard] = asyncio.ensure_future(self._start(worker, prior))

    def _worker(self, lease: Lease) -> ShardWorker:
        shard = lease.shard
        worker = ShardWorker(self.client, lease, self.parts,
                             lambda: self.keeper.fence(shard) == lease.fence, prefix=self.prefix)
        self.workers[shard] = worker
        return worker

    async def _start(self, worker: ShardWorker, prior: asyncio.Task[None] | None) -> None:
        """Run the worker; one that ends by itself (a part failed) while its grant is still held
        is started again after a backoff (crash-only: the same start as a takeover)."""
        if prior is not None:  # this process's previous worker of the shard ends first
            await asyncio.gather(prior, return_exceptions=True)
        delay = jittered_backoff(0.1, 5.0)
        attempt = 0
        while True:
            try:
                await worker.run()
            except Exception:  # logged; the lease keeps being renewed
                _log.exception("shard_worker_failed", shard=worker.shard)
            lease = worker.lease
            if worker.lost or worker.requested or not worker.owns():
                return
            attempt += 1
            wait_s = delay(attempt)
            _log.warning("shard_worker_restarting", shard=worker.shard, attempt=attempt,
                         retry_in_s=round(wait_s, 3))
            await asyncio.sleep(wait_s)
            if worker.requested or worker.lost or not worker.owns():
                return
            worker = self._worker(lease)

    async def _released(self, lease: Lease) -> None:
        worker = self.workers.get(lease.shard)
        if worker is None or worker.lease != lease:
            return
        worker.request_stop()  # the lease is still held: it snapshots before the release
        task = self.tasks.get(lease.shard)
        if task is not None:
            # bounded: the lease keeper's tick (the other shards' renewals) waits on this
            limit = min(self.parts.stop_timeout_s, self.keeper.ttl_s / 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), limit)

    def _lost(self, lease: Lease) -> None:
        worker = self.workers.get(lease.shard)
        if worker is not None and worker.lease == lease:
            worker.lose()

    def owned(self) -> list[str]:
        """The shards held now, in shard order."""
        return sorted((s for s in self.keeper.held if self.owns(s)), key=int)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the leases until ``stop``; then stop every worker at once (each snapshots while
        its lease is held), and only then release the leases (``LeaseKeeper.close``)."""
        leases_stop = asyncio.Event()
        keeping = asyncio.ensure_future(self.keeper.run(leases_stop))
        try:
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait([keeping, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for w in self.workers.values():
                w.request_stop()
            running = [t for t in self.tasks.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=self.parts.stop_timeout_s)
            leases_stop.set()
            await keeping
        finally:
            if not keeping.done():
                keeping.cancel()
                await asyncio.gather(keeping, return_exceptions=True)
            for w in self.workers.values():
                if not w.stop.is_set():
                    w.lose()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def status(self) -> list[dict[str, Any]]:
        """One row per shard held: token, lease age (s), the keeper's position and applied count."""
        now = time.monotonic()
        rows = []
        for shard in self.owned():
            w = self.workers.get(shard)
            rows.append({
                "shard": shard, "holder": self.holder, "token": self.keeper.held[shard].token,
                "held_s": round(now - self.acquired_at.get(shard, now), 3),
                "position": w.projectors[0].position if w and w.projectors else None,
                "applied": sum(p.applied for p in w.projectors) if w else 0,
                "decisions": sum(p.appended for p in w.projectors) if w else 0,
                "unreplicated": w.unreplicated() if w else None,
            })
        return rows

