"""The executor role: recorded intents in, submissions out, outcomes back into the log.

Per intent (a ``LiquidationIntended`` entry with ``mode == "live"``; anything else is acked and
ignored) the runner:

1. takes the atomic claim (``keeper.execution.claim``), which in the same step marks it
   ``submitted``; an intent already done is acked, one held by another live owner is left
   pending and looked at again later;
2. applies the expiry rule to an intent older than ``intent_ttl_us`` (by the injected clock,
   measured from its ``ts_ingest`` when the writer stamped one, else from its ``ts_event``, the
   trigger's time), below;
3. appends ``LiquidationSubmitted`` (event id ``sub:<intent>#<token>``) and submits under the
   intent id, with retries;
4. appends the venue's account events (if any) and the outcome in one atomic append, events
   first; the outcome's event id is ``out:<intent>`` for every kind, so the log's dedup keeps
   exactly one outcome per intent;
5. marks the claim done and acks the entry.

The expiry rule. An intent **may have reached the venue** exactly when its claim was ever moved
to ``submitted`` (that move is atomic with the claim, and comes before any send and before its
``LiquidationSubmitted`` record): the claim says so while it lives, and the *sent mark* of
``keeper.execution.claim`` after it lapsed (until the outcome is recorded, or 7 days). A
too-old intent

- that may not have reached the venue gets ``LiquidationExpired`` at once, without asking: it
  never left, and it is never sent late;
- that may have reached it is never expired unasked. The runner asks the executor's ``status``
  (``keeper.execution.base.status_of``): the venue has it -> ``LiquidationConfirmed``
  (``duplicate``; the venue's events first, in one atomic append, as in step 4); the venue says
  it never accepted it -> ``LiquidationExpired`` (not resubmitted: it is too old to send); the
  venue cannot tell (unreachable, rate-limited, an answer that is neither) -> left pending,
  unacked, and it comes back. An executor without ``status``, or a venue without a status
  answer (``StatusUnsupported``), is not asked: the intent is resubmitted under its key and the
  venue's idempotency answers, as before.

"The venue never accepted it" is final because no earlier request can still be applied: each
HTTP request carries ``X-Keeper-Deadline`` (the end of its timeout), which the reference venue
enforces; the HTTP executor's retries end within its ``deadline_s`` (20 s by default), below the
claim's TTL (30 s), so a process whose claim lapsed has stopped sending before another takes
the intent; and one runner never handles an entry twice at once. (A venue that neither
honours the deadline nor applies promptly leaves a window of one request timeout.)

The kill switch and market pauses hold submissions here too: the runner follows
``KeeperPaused``/``KeeperResumed`` in the log it reads (``keeper.execution.pauses``), leaves the
intents they cover pending (unsent, unacked) and, on the resume, reconciles them (submitted, or
expired by the rule). A restarted runner does not know of a pause recorded before its group
position. The records it appends are built by ``keeper.execution.outcomes``.

Start-up is recovery (crash-only): ``start`` re-reads this consumer's own pending entries and
XAUTOCLAIMs entries other consumers left pending for longer than ``stale_ms``; ``step`` does the
same every ``reclaim_every`` steps. A transient failure that outlasts the retries leaves the entry
pending (the claim expiring, the sent mark staying), so it comes back: resubmitted while within
its TTL, asked about after (never expired unasked).

``KEEPER_TEST_CRASH_AT`` makes the process ``os._exit(137)`` at one point: ``after_intent`` (the
intent is delivered to this consumer, not claimed), ``before_post`` (claimed, nothing sent),
``after_submit`` (the venue answered, no outcome recorded). For the crash tests only; never set
in production.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import structlog

from keeper.aio import wait_event
from keeper.backoff import Backoff, jittered_backoff
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.errors import ExecutionError, LogUnavailable, PermanentError, TransientError
from keeper.execution import outcomes
from keeper.execution.base import StatusUnsupported, Submission, VenueExecutor, status_of
from keeper.execution.claim import Claims
from keeper.execution.outcomes import outcome_id
from keeper.execution.pauses import Pauses, watch_venue_halts
from keeper.ports import LogEntry
from keeper.store import health
from keeper.store.redis_log import RedisEventLog

__all__ = ["CRASH_ENV", "Runner", "outcome_id"]

CRASH_ENV = "KEEPER_TEST_CRASH_AT"
_REDIS_RETRIES = 8
_log = structlog.get_logger()


def _is_live_intent(entry: LogEntry) -> bool:
    e = entry.event
    return isinstance(e, ev.LiquidationIntended) and e.decision.mode == "live"


class Runner:
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
        self._inflight: set[asyncio.Task[None]] = set()
        self.pauses = Pauses(consumer, count=self._count)
        self.paused = self.pauses.scopes
        """Pause scopes seen in the log (``*``: kill switch): their intents are held, pending."""
        self.group_size = group_size
        many: Callable[[list[ev.Decision]], Awaitable[list[Submission | ExecutionError]]] | None = \
            getattr(executor, "execute_many", None)
        self._execute_many = many
        self._batches = many is not None and getattr(executor, "batch_url", None) is not None
        """Intents go out in groups (``handle_group``) when the executor has a batch endpoint."""
        self.halt_poll_s = halt_poll_s
        self.venue_halts = self.pauses.venue_halts
        """Markets paused because the venue halted them -> the pause's event id."""
        self._active: set[str] = set()
        self._steps = 0
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            _log.warning("test_crash", point=point, consumer=self.consumer)
            os._exit(137)

    async def start(self) -> int:
        """Create the group if needed and reconcile (own pending entries, then stale ones),
        waiting for that work to finish before any new entry is read."""
        await self.log.ensure_group(self.group, "0")
        return await self.reconcile()

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
        try:
            while not stop.is_set():
                try:
                    await self.step(block_ms)
                except LogUnavailable:
                    await self._until_up(stop, self.reconcile)
        finally:
            halts.cancel()
            await asyncio.gather(halts, return_exceptions=True)
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
            self._active.add(entry.id)
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

    async def _group(self, entries: list[LogEntry]) -> None:
        """``_one`` for a group of intents sent together (an executor with a batch endpoint)."""
        try:
            for attempt in range(1, _REDIS_RETRIES + 1):
                try:
                    await self.log.ack(self.group, await self.handle_group(entries))
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

    async def handle_group(self, entries: list[LogEntry]) -> list[str]:
        """``handle`` for several live intents at once; returns the entry ids that may be acked.

        The same steps and guarantees, each done once for the group: one atomic claim of every
        intent (``Claims.take_many``, phase ``submitted``), one append of their
        ``LiquidationSubmitted``, one ``execute_many`` (the venue's batch endpoint: per-item
        idempotency under each intent id), one atomic append of every answered item's account
        events and outcome (events first), one ``finish_many``. An intent past its TTL goes the
        way of ``handle`` (its expiry rule asks the venue); one done already is acked; one held
        elsewhere or not answered (a transient failure of the whole request) is left pending.
        """
        self._crash("after_intent")
        now = self.now_us()
        acks: list[str] = []
        fresh: list[tuple[LogEntry, ev.Decision]] = []
        for entry in entries:
            event = entry.event
            assert isinstance(event, ev.LiquidationIntended)
            born = event.ts_ingest or event.ts_event
            if self.intent_ttl_us is not None and now - born > self.intent_ttl_us:
                if await self.handle(entry):  # the expiry rule, one by one (rare)
                    acks.append(entry.id)
            else:
                fresh.append((entry, event.decision))
        claims = await self.claims.take_many([d.intent_id for _, d in fresh], self.consumer, "submit")
        go: list[tuple[LogEntry, ev.Decision, int]] = []
        for (entry, d), claim in zip(fresh, claims, strict=True):
            if claim.done:
                self._count("already_done")
                acks.append(entry.id)
            elif not claim.ok:
                self._count("held_elsewhere")
            else:
                go.append((entry, d, claim.token))
        if not go:
            return acks
        self._crash("before_post")
        sends = [outcomes.submitted(d, token, self.executor.name, now) for _, d, token in go]
        # recorded alongside the sends, off their path (the claims already say submitted)
        recorded = asyncio.ensure_future(self.log.append(sends))
        try:
            assert self._execute_many is not None  # _batches
            answers = await self._execute_many([d for _, d, _ in go])
        finally:
            await asyncio.gather(recorded, return_exceptions=True)
        recorded.result()  # a failed record of the sends is retried with the group
        self._crash("after_submit")
        record: list[ev.Event] = []
        finish: list[tuple[str, str, int]] = []
        halted: set[str] = set()
        t = self.now_us()
        for (entry, d, token), answer in zip(go, answers, strict=True):
            if isinstance(answer, Submission):
                kind = "confirmed_duplicate" if answer.duplicate else "confirmed"
                record += [*answer.events, outcomes.confirmed(d, answer, t)]
            elif isinstance(answer, PermanentError):
                kind = "rejected"
                halt = [h for h in self.pauses.venue_halt(d, answer.reason, t)
                        if isinstance(h, ev.KeeperPaused) and h.scope not in halted]
                halted |= {h.scope for h in halt if isinstance(h, ev.KeeperPaused)}
                record += [*halt, outcomes.rejected(d, answer.reason, t)]
            else:
                self._count("transient_gave_up")
                _log.warning("submit_gave_up", intent_id=d.intent_id, error=str(answer))
                continue
            finish.append((d.intent_id, kind, token))
            acks.append(entry.id)
            self._count(kind)
        # the venue's account events first, in the same atomic append as the outcomes
        await self.log.append(record)
        await self.claims.finish_many(finish)
        return acks

    async def _one(self, entry: LogEntry) -> None:
        try:
            for attempt in range(1, _REDIS_RETRIES + 1):
                try:
                    if await self.handle(entry):
                        await self.log.ack(self.group, [entry.id])
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

    async def handle(self, entry: LogEntry) -> bool:
        """Process one entry; returns whether it may be acked."""
        event = entry.event
        if not isinstance(event, ev.LiquidationIntended) or event.decision.mode != "live":
            return True
        d = event.decision
        log = _log.bind(intent_id=d.intent_id, entry_id=entry.id, consumer=self.consumer)
        self._crash("after_intent")  # delivered to this consumer, not claimed yet
        now = self.now_us()
        # age from when the intent entered the log where the writer stamped it (a replayed
        # recording's source times may be far behind the wall clock), else its trigger's time
        born = event.ts_ingest or event.ts_event
        too_old = self.intent_ttl_us is not None and now - born > self.intent_ttl_us
        claim = await self.claims.take(d.intent_id, self.consumer, "expire" if too_old else "submit")
        if claim.done:
            self._count("already_done")
            return True
        if not claim.ok:
            self._count("held_elsewhere")
            log.info("intent_held_elsewhere")
            return False
        if too_old and claim.phase != "submitted":  # never marked submitted: it never left
            await self._expire(d, now, claim.token,
                               f"ttl: not submitted within {self.intent_ttl_us} us of its trigger")
            return True
        if too_old:  # it may have reached the venue: ask before anything else
            asked = await self._ask_venue(d, claim.token)
            if asked is not None:
                return asked
        self._crash("before_post")  # claimed (phase submitted), nothing sent yet
        # the claim (phase ``submitted``) and its sent mark are the durable record that a send
        # may have happened; LiquidationSubmitted is written alongside the send, off the
        # critical path
        submitted = asyncio.ensure_future(self.log.append(
            [outcomes.submitted(d, claim.token, self.executor.name, now)]))
        try:
            sub = await self.executor.execute(d)
        except PermanentError as exc:
            await submitted
            rejected = outcomes.rejected(d, exc.reason, self.now_us())
            # a market the venue reports halted is paused in the log, before the rejection
            await self.log.append([*self.pauses.venue_halt(d, exc.reason, rejected.ts_event), rejected])
            await self.claims.finish(d.intent_id, "rejected", claim.token)
            self._count("rejected")
            log.info("intent_done", outcome="rejected", token=claim.token, reason=exc.reason)
            return True
        except TransientError as exc:
            await submitted
            self._count("transient_gave_up")
            log.warning("submit_gave_up", error=str(exc))
            return False
        except BaseException:
            await asyncio.gather(submitted, return_exceptions=True)
            raise
        await submitted
        self._crash("after_submit")
        await self._confirm(d, sub, claim.token, "confirmed_duplicate" if sub.duplicate else "confirmed")
        return True

    async def _ask_venue(self, d: ev.Decision, token: int) -> bool | None:
        """The venue's word on a too-old intent that may have reached it: True when its outcome
        is now recorded, False to leave it pending (the venue cannot tell), None to resubmit
        (the executor or the venue cannot be asked)."""
        ask = status_of(self.executor)
        if ask is None:
            return None
        log = _log.bind(intent_id=d.intent_id, consumer=self.consumer)
        try:
            found = await ask(d.intent_id)
        except StatusUnsupported as exc:
            self._count("status_unsupported")
            log.warning("status_unsupported", error=str(exc))
            return None
        except TransientError as exc:
            self._count("status_unavailable")
            log.warning("status_unavailable", error=str(exc))
            return False
        if found is None:
            reason = (f"ttl: not accepted within {self.intent_ttl_us} us of its trigger "
                      "(the venue has no liquidation under its key)")
            await self._expire(d, self.now_us(), token, reason)
            return True
        await self._confirm(d, found._replace(duplicate=True), token, "confirmed_by_status")
        return True

    async def _expire(self, d: ev.Decision, now: int, token: int, reason: str) -> None:
        await self.log.append([outcomes.expired(d, reason, now)])
        await self.claims.finish(d.intent_id, "expired", token)
        self._count("expired")
        _log.info("intent_expired", intent_id=d.intent_id, consumer=self.consumer, reason=reason)

    async def _confirm(self, d: ev.Decision, sub: Submission, token: int, kind: str) -> None:
        outcome = outcomes.confirmed(d, sub, self.now_us())
        # the venue's account events first, in the same atomic append as the outcome: a
        # confirmed outcome is never in the log before the balances it changed
        await self.log.append([*sub.events, outcome])
        await self.claims.finish(d.intent_id, kind, token)
        self._count(kind)
        _log.info("intent_done", intent_id=d.intent_id, consumer=self.consumer, outcome=kind, token=token,
                  venue_ref=sub.ref)
