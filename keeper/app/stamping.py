"""The log as two of the daemon's roles see it: wrappers over a ``RedisEventLog`` that stamp
and count what passes through, everything else delegated to the inner log.

- ``StampingLog``: the keeper role's log. Stamps ``ts_ingest`` on the intents it appends (the
  pure core cannot read a clock), observes tick-to-intent latency, screens intents through
  a ``FreshnessGuard`` (``keeper.app.freshness``), except intents the log already holds
  (re-derived after a restart or takeover: a duplicate, its outcome the recorded one's), and
  hands the live intents it recorded to the runner of the same process (``handoff``:
  ``Runner.offer``);
- ``CountingSink``: the ingest writer's log, counting what it appended by event type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import structlog

from keeper.app.freshness import FreshnessGuard
from keeper.app.metrics import Metrics
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.ports import LogEntry
from keeper.store.archive import ArchivedLog
from keeper.store.redis_io import wrap_errors
from keeper.store.redis_log import RedisEventLog

__all__ = ["CountingSink", "StampingLog"]

_log = structlog.get_logger()


class StampingLog:
    """The keeper's view of the log: stamps ``ts_ingest`` on the intents it appends, so that
    tick-to-intent latency is in the log itself (the pure core cannot read a clock).

    Only the envelope is stamped: the ``Decision`` inside is the core's, byte for byte, which
    is what ``keeper replay --verify`` compares. With ``metrics``: each intent's tick-to-intent
    latency (its trigger's ``ts_ingest`` in the batch just read -> now) is observed and intents
    are counted by mode (``intended`` for live ones); with ``count_applied`` also the entries
    read, by event type (the projector applies every entry it reads before reading again).
    """

    def __init__(self, inner: RedisEventLog | ArchivedLog, metrics: Metrics | None = None,
                 count_applied: bool = False, guard: FreshnessGuard | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self.count_applied = count_applied
        self.guard = guard
        """Withholds live intents on prices old by the wall clock (``keeper.app.freshness``)."""
        self.handoff: Callable[[list[LogEntry]], Awaitable[object]] | None = None
        """Given the live intents just recorded, as recorded (``Runner.offer``: the executor role
        of this process starts on them without waiting for its consumer group)."""
        self._ingested: dict[str, int] = {}

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        entries, pos = await self.inner.read_batch(after, count, block_ms)
        if self.guard is not None and entries:
            back = self.guard.recover(entries)  # a fresh price for a market stale by the wall clock
            if back:
                await self.inner.append(back)
        m = self.metrics
        if m is not None and entries:
            # the triggers of the intents decided after this batch are in this batch
            self._ingested = {e.id: e.event.ts_ingest for e in entries}
            if self.count_applied:
                for e in entries:
                    m.events_applied.inc(ev.event_type(e.event))
        return entries, pos

    async def append(self, events: Sequence[ev.Event]) -> list[str | None]:
        now = wall_clock_us()
        if self.guard is not None:
            events = self.guard.screen(events, await self._recorded(self.guard.would_withhold(events)))
        out = [msgspec.structs.replace(e, ts_ingest=now) if type(e) is ev.LiquidationIntended
               and e.ts_ingest == 0 else e for e in events]
        ids = await self.inner.append(out)
        if self.handoff is not None:
            live = [LogEntry(i, e) for e, i in zip(out, ids, strict=True) if i is not None
                    and type(e) is ev.LiquidationIntended and e.decision.mode == "live"]
            if live:
                try:
                    await self.handoff(live)
                except Exception as exc:  # a speed-up only: the group delivers them anyway
                    _log.warning("handoff_failed", intents=len(live), error=repr(exc)[:300])
        m = self.metrics
        if m is not None:
            for e, i in zip(out, ids, strict=True):
                if i is None or type(e) is not ev.LiquidationIntended:
                    continue
                assert isinstance(e, ev.LiquidationIntended)
                d = e.decision
                m.intents.inc("intended" if d.mode == "live" else d.mode)
                trig = self._ingested.get(d.trigger, 0)
                if trig and e.ts_ingest >= trig:
                    m.tick_to_intent.observe((e.ts_ingest - trig) / 1e6)
        return ids

    async def _recorded(self, intent_ids: list[str]) -> set[str]:
        """Which of ``intent_ids`` the log's duplicate index holds: intents re-derived after a
        restart or a takeover (snapshot + tail) that were recorded, live, before. The guard must
        not withhold those: their expiry would be a second outcome of an intent already sent."""
        ids_key = getattr(self.inner, "ids_key", None)
        if not intent_ids or ids_key is None:
            return set()
        async with wrap_errors("read ids"):
            found = await self.inner.client.smismember(ids_key, intent_ids)
        return {i for i, f in zip(intent_ids, found, strict=True) if f}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingSink:
    """The ingest writer's log: counts what it appended (``events_ingested_total{type}``)."""

    def __init__(self, inner: RedisEventLog | ArchivedLog, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def append(self, events: Sequence[ev.Event]) -> list[str | None]:
        ids = await self.inner.append(events)
        for e, i in zip(events, ids, strict=True):
            if i is not None:
                self.metrics.events_ingested.inc(ev.event_type(e))
        return ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
