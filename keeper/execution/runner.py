"""The executor role: recorded intents in, submissions out, outcomes back into the log.

The ``Runner`` reads live intents through a Redis consumer group and hands each (or a group of
them) to the steps of ``keeper.execution.handling`` (claim, expiry rule, submission, records:
exactly once), at most ``concurrency`` at once.

The kill switch and market pauses hold submissions here too: the runner follows
``KeeperPaused``/``KeeperResumed`` in the log it reads (``keeper.execution.pauses``), leaves the
intents they cover pending (unsent, unacked) and, on the resume, reconciles them (submitted, or
expired by the rule). A restarted runner does not know of a pause recorded before its group
position. The records it appends are built by ``keeper.execution.outcomes``.

The hand-off (``offer``). When the keeper role runs in the same process, it hands the live intents
it has just recorded straight to the runner, which starts on them at once as far as it has room
(the same claim, submission and records) instead of waiting for the consumer group to deliver them; the
keeper waits, bounded, until the first of them is sent before it decides further (a burst's
first chunk leaves before the next is checked). It only saves time: each intent is in the log
and in the group as before, and when the group delivers it the runner skips it while it is in
hand (``_active``) and afterwards finds its claim done and acks it without a second send; a
crash at any point leaves what the group path would. Intents a pause known to this runner
covers (read from the log, or recorded by it for a venue halt) are left to the group path, which
judges them in log order.

Start-up is recovery (crash-only): ``start`` re-reads this consumer's own pending entries and
XAUTOCLAIMs entries other consumers left pending for longer than ``stale_ms``; ``step`` does the
same every ``reclaim_every`` steps. A transient failure that outlasts the retries leaves the entry
pending (the claim expiring, the sent mark staying), so it comes back: resubmitted while within
its TTL, asked about after (never expired unasked).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence

import structlog

from keeper.aio import wait_event
from keeper.backoff import Backoff, jittered_backoff
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.errors import ExecutionError, LogUnavailable
from keeper.execution.base import Submission, VenueExecutor
from keeper.execution.claim import Claims
from keeper.execution.handling import CRASH_ENV, IntentHandling
from keeper.execution.outcomes import outcome_id
from keeper.execution.pauses import Pauses, watch_venue_halts
from keeper.ports import LogEntry
from keeper.store import health
from keeper.store.redis_log import RedisEventLog

__all__ = ["CRASH_ENV", "HANDOFF_FIRST", "HANDOFF_WAIT_S", "Runner", "outcome_id"]

HANDOFF_WAIT_S = 0.05
"""How long ``offer`` waits at most for the first handed-off intent to be sent (its claim is one
Redis round trip: ~0.2 ms on loopback)."""
HANDOFF_FIRST = 8
"""The first group of a hand-off (an executor with a batch endpoint): claimed in one script
(~0.3 ms for 8 intents, ~1.4 ms for 64 on loopback) and sent before the rest of its chunk."""
_REDIS_RETRIES = 8
_log = structlog.get_logger()


def _is_live_intent(entry: LogEntry) -> bool:
    e = entry.event
    return isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live"


class Runner(IntentHandling):
    """Drives one executor from one consumer group. ``consumer`` must be stable per process
    identity (it is also the claim owner: a restarted process takes its own claims back)."""

    def __init__(
        self,
        log: RedisEventLog,
        claims: Claims,
        executor: VenueExecutor,
        *,
        consumer: str,
        group: str = "executor",
        intent_ttl_us: int | None = 60_000_000,
        now_us: Callable[[], int] = wall_clock_us,
        batch: int = 100,
        concurrency: int = 32,
        stale_ms: int = 30_000,
        reclaim_every: int = 50,
        crash_at: str | None = None,
        outage_backoff: Backoff | None = None,
        halt_poll_s: float = 1.0,
        group_size: int = 100,
    ) -> None:
        self.log = log
        self.claims = claims
        self.executor = executor
        self.consumer = consumer
        self.group = group
        self.intent_ttl_us = intent_ttl_us
        self.now_us = now_us
        self.batch = batch
        self.stale_ms = stale_ms
        self.reclaim_every = reclaim_every
        self.crash_at = crash_at if crash_at is not None else os.environ.get(CRASH_ENV) or None
        self.outage_backoff = outage_backoff or jittered_backoff(0.1, 2.0)
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self.pauses = Pauses(consumer, count=self._count)
        self.paused = self.pauses.scopes
        """Pause scopes seen in the log (``*``: kill switch): their intents are held, pending."""
        self.group_size = group_size
        many: Callable[[list[ev.Decision]], Awaitable[list[Submission | ExecutionError]]] | None = \
            getattr(executor, "execute_many", None)
        self._execute_many = many
        self._batching = many is not None
        self.halt_poll_s = halt_poll_s
        self.venue_halts = self.pauses.venue_halts
        """Markets paused because the venue halted them -> the pause's event id."""
        self._active: set[str] = set()
        self._following = False
        """Started (reconciled) and following the group: hand-offs are taken (``offer``)."""
        self._unsent: set[str] = set()
        """Entries in hand (``_active``) not yet past their send point."""
        self._watch: dict[str, asyncio.Event] = {}
        """Entries ``offer`` calls (one per keeper core) wait to see sent, and their events."""
        self._steps = 0
        self.counts: dict[str, int] = {}

    @property
    def _batches(self) -> bool:
        """Intents go out in groups (``handle_group``) while the executor has a batch endpoint
        (one that answered 404 on it has none from then on: one request each)."""
        return self._batching and getattr(self.executor, "batch_url", None) is not None

    async def start(self) -> int:
        """Create the group if needed and reconcile (own pending entries, then stale ones),
        waiting for that work to finish before any new entry is read."""
        await self.log.ensure_group(self.group, "0")
        await self.claims.prepare()
        n = await self.reconcile()
        self._following = True
        return n

    async def reconcile(self) -> int:
        """Handle this consumer's pending entries and other consumers' stale ones; returns when
        they are done."""
        own = await self.log.read_pending(self.group, self.consumer, self.batch)
        stale = await self.log.claim_stale(self.group, self.consumer, self.stale_ms, self.batch)
        seen = {e.id for e in own}
        entries = own + [e for e in stale if e.id not in seen]
        await self._dispatch(entries)
        await self.wait_idle()
        if entries:
            _log.info("reconciled", consumer=self.consumer, group=self.group, entries=len(entries))
        return len(entries)

    async def step(self, block_ms: int | None = None) -> int:
        """Read one batch of new entries and start handling them; returns how many were read.

        Intents are handled in background tasks (at most ``concurrency`` at once), so a slow or
        retrying submission never holds up the next one; ``wait_idle`` waits for them.
        """
        self._steps += 1
        if self._steps % self.reclaim_every == 0:
            await self._dispatch(await self.log.claim_stale(self.group, self.consumer, self.stale_ms,
                                                            self.batch))
        entries = await self.log.read_group(self.group, self.consumer, self.batch, block_ms)
        await self._dispatch(entries)
        return len(entries)

    async def run(self, stop: asyncio.Event, block_ms: int = 200) -> None:
        """Reconcile, then follow the log until ``stop`` is set; in-flight work is finished.

        Redis being unreachable does not end the loop: it waits (``outage_backoff``) and goes
        on, reconciling again once Redis answers.
        """
        await self._until_up(stop, self.start)
        # a market the venue halted is resumed once the venue trades it again (``pauses``)
        halts = asyncio.ensure_future(watch_venue_halts(
            self.pauses, getattr(self.executor, "markets", None), append=self.log.append,
            now_us=self.now_us, stop=stop, interval_s=self.halt_poll_s))
        keep_warm = getattr(self.executor, "keep_warm", None)  # an open connection for the next crash
        warm = asyncio.ensure_future(keep_warm(stop) if keep_warm is not None else asyncio.sleep(0))
        try:
            while not stop.is_set():
                try:
                    await self.step(block_ms)
                except LogUnavailable:
                    await self._until_up(stop, self.reconcile)
        finally:
            self._following = False
            halts.cancel()
            warm.cancel()
            await asyncio.gather(halts, warm, return_exceptions=True)
            await self.wait_idle()

    async def _until_up(self, stop: asyncio.Event, call: Callable[[], Awaitable[int]]) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                await call()
                health.REDIS.recovered("executor")
                return
            except LogUnavailable as exc:
                attempt += 1
                health.REDIS.wait("executor", str(exc))
                self._count("redis_unavailable")
                _log.warning("runner_waiting_for_redis", consumer=self.consumer, attempt=attempt,
                             error=str(exc))
                await wait_event(stop, self.outage_backoff(attempt))

    def busy(self) -> bool:
        """Whether an intent is being handled now."""
        return bool(self._inflight)

    async def wait_idle(self) -> None:
        """Wait until no intent is being handled."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def offer(self, entries: Sequence[LogEntry], wait_s: float = HANDOFF_WAIT_S) -> int:
        """Take live intents this process has just recorded (``entries``: their log ids and the
        events as recorded) ahead of the group's delivery, as far as there is room for them
        (``concurrency``): a few at any time, more only when nothing is in flight (a burst's
        first chunk; its later ones go through the group in larger batches). It waits, at most
        ``wait_s``, until the first of them in hand (taken here or already by the group) is
        sent, so the caller decides nothing further before it leaves; the rest are claimed
        after it. Returns how many it took; the others come through the group as usual."""
        if not self._following or (self._inflight and len(entries) > HANDOFF_FIRST):
            return 0  # a burst's later chunks: the group takes them in large batches
        take = [e for e in entries if _is_live_intent(e) and e.id not in self._active
                and not self.pauses.covers(e.event)]
        units = [[e] for e in take]
        if self._batches and take:  # a small first group: its claim and its request leave first
            lead = min(HANDOFF_FIRST, self.group_size)
            units = [take[:lead], *(take[k:k + self.group_size]
                                    for k in range(lead, len(take), self.group_size))]
        taken = 0
        waited = False
        for unit in units:
            # what the group took in hand meanwhile is its own: one runner never handles an
            # entry twice at once (the claim would let the same owner take it again)
            todo = [e for e in unit if e.id not in self._active]
            if not todo:
                continue
            if self._sem.locked():  # no room: never block the keeper, the group has them
                break
            self._hold(todo)
            await self._start(self._group(todo) if self._batches else self._one(todo[0]))
            taken += len(todo)
            if not waited:  # the rest is claimed once the first has left
                await self._until_sent(entries, wait_s)
                waited = True
        if not waited:
            await self._until_sent(entries, wait_s)  # the group may have them in hand
        self.counts["handed_off"] = self.counts.get("handed_off", 0) + taken
        return taken

    async def _until_sent(self, entries: Sequence[LogEntry], wait_s: float) -> None:
        """Wait, at most ``wait_s``, until the first of ``entries`` in hand is past its send."""
        first = next((e.id for e in entries if e.id in self._unsent), None)
        if first is not None:
            sent = self._watch[first] = asyncio.Event()
            try:
                await wait_event(sent, wait_s)
            finally:
                self._watch.pop(first, None)

    def _hold(self, entries: Sequence[LogEntry]) -> None:
        """Mark ``entries`` in hand (the group skips them) and not sent yet."""
        for entry in entries:
            self._active.add(entry.id)
            self._unsent.add(entry.id)

    async def _dispatch(self, entries: list[LogEntry]) -> None:
        skip: list[str] = []
        resumed = False
        burst: list[LogEntry] = []
        for entry in entries:
            if not _is_live_intent(entry):
                resumed = self.pauses.follow(entry.event) or resumed
                skip.append(entry.id)
                continue
            # the pause is judged in log order, at the intent's place in the batch
            if entry.id in self._active or self.pauses.holds(entry.event):
                continue
            self._hold([entry])
            if self._batches:
                burst.append(entry)
                if len(burst) >= self.group_size:
                    await self._start(self._group(burst))
                    burst = []
            else:
                await self._start(self._one(entry))
        if burst:
            await self._start(self._group(burst))
        # acked after the intents are under way: the ack is off the submission's path
        await self.log.ack(self.group, skip)
        if resumed:  # intents held while paused are this consumer's pending entries
            await self.reconcile()

    async def _start(self, work: Awaitable[None]) -> None:
        """Run ``work`` (one intent, or a group) as a task, at most ``concurrency`` at once."""
        await self._sem.acquire()  # backpressure: bounded work in flight
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _ack_done(self, ids: list[str]) -> None:
        """Ack entries whose handling is over (their claims say done). They leave ``_active``
        first: a handed-off entry the group delivers after this ack is then handled (found done,
        acked) instead of skipped and left pending."""
        self._active.difference_update(ids)
        await self.log.ack(self.group, ids)

    async def _group(self, entries: list[LogEntry]) -> None:
        """``_one`` for a group of intents sent together (an executor with a batch endpoint)."""
        try:
            for attempt in range(1, _REDIS_RETRIES + 1):
                try:
                    await self._ack_done(await self.handle_group(entries))
                    return
                except LogUnavailable as exc:  # idempotent, as ``handle``: retried here
                    self._count("redis_unavailable")
                    if attempt == _REDIS_RETRIES:
                        raise
                    _log.info("group_retry_redis", entries=len(entries), attempt=attempt,
                              error=str(exc))
                    await asyncio.sleep(self.outage_backoff(attempt))
        except Exception as exc:  # left pending: reclaimed when stale, never lost
            self._count("error")
            _log.warning("group_error", entries=len(entries), error=f"{type(exc).__name__}: {exc}")
        finally:
            for entry in entries:
                self._active.discard(entry.id)
            self._sem.release()
            self._sending([e.id for e in entries])

    async def _one(self, entry: LogEntry) -> None:
        try:
            for attempt in range(1, _REDIS_RETRIES + 1):
                try:
                    if await self.handle(entry):
                        await self._ack_done([entry.id])
                    return
                except LogUnavailable as exc:
                    # handling is idempotent (same owner retakes its claim, same ids): retry
                    # here rather than wait for the entry to go stale
                    self._count("redis_unavailable")
                    if attempt == _REDIS_RETRIES:
                        raise
                    _log.info("intent_retry_redis", entry_id=entry.id, attempt=attempt, error=str(exc))
                    await asyncio.sleep(self.outage_backoff(attempt))
        except Exception as exc:  # left pending: reclaimed when stale, never lost
            self._count("error")
            _log.warning("intent_error", entry_id=entry.id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._active.discard(entry.id)
            self._sem.release()
            self._sending([entry.id])

