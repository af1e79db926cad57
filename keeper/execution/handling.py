"""One intent (or a group of them) through the executor role's steps: claim, expiry rule,
submission, records; ``keeper.execution.runner.Runner`` drives it.

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

``KEEPER_TEST_CRASH_AT`` makes the process ``os._exit(137)`` at one point: ``after_intent`` (the
intent is delivered to this consumer, not claimed), ``before_post`` (claimed, nothing sent),
``after_submit`` (the venue answered, no outcome recorded). For the crash tests only; never set
in production.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable

import structlog

from keeper.domain import events as ev
from keeper.errors import ExecutionError, PermanentError, TransientError
from keeper.execution import outcomes
from keeper.execution.base import StatusUnsupported, Submission, VenueExecutor, status_of
from keeper.execution.claim import Claims
from keeper.execution.pauses import Pauses
from keeper.ports import LogEntry
from keeper.store.redis_log import RedisEventLog

__all__ = ["CRASH_ENV", "IntentHandling"]

CRASH_ENV = "KEEPER_TEST_CRASH_AT"
_log = structlog.get_logger()


class IntentHandling:
    """The per-intent steps of the runner (its base class: the runner sets these attributes)."""

    log: RedisEventLog
    claims: Claims
    executor: VenueExecutor
    consumer: str
    intent_ttl_us: int | None
    now_us: Callable[[], int]
    crash_at: str | None
    pauses: Pauses
    counts: dict[str, int]
    _execute_many: Callable[[list[ev.Decision]], Awaitable[list[Submission | ExecutionError]]] | None
    _unsent: set[str]
    _watch: dict[str, asyncio.Event]

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            _log.warning("test_crash", point=point, consumer=self.consumer)
            os._exit(137)

    def _sending(self, ids: Iterable[str]) -> None:
        """The entries ``ids`` are past their send point (the request is leaving, or their
        handling ended without one): wake an ``offer`` waiting for one of them."""
        self._unsent.difference_update(ids)
        if self._watch:
            for entry_id in ids:
                sent = self._watch.pop(entry_id, None)
                if sent is not None:
                    sent.set()

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
        sent_at = self.now_us()  # the records say when the request left
        sends = [outcomes.submitted(d, token, self.executor.name, sent_at) for _, d, token in go]
        self._sending([e.id for e in entries])
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
            [outcomes.submitted(d, claim.token, self.executor.name, self.now_us())]))
        self._sending([entry.id])
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
