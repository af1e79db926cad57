"""Ingest: normalised events -> (conflation) -> the log, without losing or inventing any.

``Ingest`` owns a bounded buffer drained by one writer task (``run``) that appends in batches:

- **Conflation** (``conflate=True``): while a ``PriceUpdated`` for a symbol waits in the tail of
  the buffer (no other kind of event queued after it), a newer one for the same symbol replaces
  it in place; ``stats['conflated']`` counts the replaced ones. A frame of several prices (one
  published instant, ``frame_more``) is conflated only as a whole, by the next frame of the
  same symbols. Any other event (account events,
  FeedStale/FeedRecovered) closes the tail, so nothing moves across it: account events are never
  dropped, merged or reordered, and a price never jumps ahead of an event it followed.
- **Backpressure**: when the buffer holds ``max_pending`` events, producers wait (``submit``
  blocks), which in turn stops reading the websocket, whose bounded queue stops the TCP flow.
- **Log unreachable**: a batch the log refuses (``LogError``, including ``LogUnavailable``) is
  retried with the injected backoff until it is accepted; every failure logs an error (the
  alarm) and counts ``log_retries``. Nothing is dropped; producers block once the buffer fills.
- Rejected inputs are dead-lettered (``log.dead_letter``) by the same writer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from keeper.backoff import Backoff, delays, jittered_backoff
from keeper.clock import SystemClock
from keeper.domain.events import Event, PriceUpdated
from keeper.errors import LogError
from keeper.feeds.parsers import Parser, Quote
from keeper.feeds.pipeline import PricePipeline, Reject
from keeper.feeds.ws import WsConfig, WsFeed
from keeper.ports import Clock
from keeper.store import health

__all__ = ["Ingest", "LogSink"]

log = structlog.get_logger()


class LogSink(Protocol):
    """What ingest needs of ``keeper.ports.EventLog``: append and dead-letter."""

    async def append(self, events: Sequence[Event]) -> list[str | None]: ...

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes) -> object: ...


def _frame_key(events: Sequence[Event]) -> tuple[str, ...] | None:
    """The symbols of a multi-price frame (prices marked ``frame_more``, all of them prices), or
    None for anything else."""
    if len(events) < 2 or not all(type(e) is PriceUpdated for e in events):
        return None
    if not any(e.frame_more for e in events):  # type: ignore[attr-defined]
        return None
    return tuple(e.symbol for e in events)  # type: ignore[attr-defined]


class Ingest:
    """The single writer of feed events into ``log`` (see the module docstring).

    Start ``run()`` as a task; ``drain()`` waits until everything submitted is in the log;
    ``close()`` lets the writer finish what is queued and return. Stop the writer with
    ``close()``, not by cancelling it: a cancelled writer loses the batch it was appending.
    """

    def __init__(self, log: LogSink, *, pipeline: PricePipeline | None = None, clock: Clock | None = None,
                 conflate: bool = True, max_pending: int = 10_000, batch_max: int = 1000,
                 retry: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.log = log
        self.pipeline = pipeline or PricePipeline()
        self.clock: Clock = clock or SystemClock()
        self.conflate = conflate
        self.max_pending = max_pending
        self.batch_max = batch_max
        self.retry = retry or jittered_backoff(0.05, 5.0)
        self.sleep = sleep
        self.stats: Counter[str] = Counter()
        self.unavailable = False
        self._buf: list[Event] = []
        self._tail: dict[str, int] = {}
        self._frame_tail: tuple[int, tuple[str, ...]] | None = None
        """Where the last multi-price frame starts in the buffer and its symbols, while it is
        the buffer's end (``_put_frame``)."""
        self._drains = 0
        self._dead: list[Reject] = []
        self._changed = asyncio.Condition()
        self._busy = False
        self._closed = False

    # ------------------------------------------------------------------ producers

    async def submit_frame(self, source: str, parser: Parser, raw: bytes | str) -> None:
        """Parse, guard and queue one websocket frame (its rejects are dead-lettered)."""
        out = self.pipeline.process_frame(source, parser, raw, self.clock.now_us())
        await self._put(out.events, out.rejects)

    async def submit_quotes(self, quotes: Sequence[Quote], now_us: int | None = None) -> None:
        """Guard and queue quotes from a recorded source; ``now_us`` defaults to the clock."""
        out = self.pipeline.process_quotes(quotes, self.clock.now_us() if now_us is None else now_us)
        await self._put(out.events, out.rejects)

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue events as they are (account events: never conflated, dropped or reordered)."""
        await self._put(events, ())

    async def submit_rejects(self, rejects: Sequence[Reject]) -> None:
        """Queue inputs to dead-letter (decode failures of account streams, bad file lines)."""
        await self._put((), rejects)

    async def check_stale(self, now_us: int | None = None) -> None:
        """Run the staleness watchdog once and queue what it says."""
        await self._put(self.pipeline.check_stale(self.clock.now_us() if now_us is None else now_us), ())

    async def watch_stale(self, interval_s: float) -> None:
        """Run the watchdog every ``interval_s`` until cancelled."""
        while True:
            await self.sleep(interval_s)
            await self.check_stale()

    async def _put(self, events: Sequence[Event], rejects: Sequence[Reject]) -> None:
        if not events and not rejects:
            return
        async with self._changed:
            for r in rejects:
                if len(self._dead) >= self.max_pending:
                    self._changed.notify_all()  # wake the writer before waiting on it
                await self._changed.wait_for(lambda: len(self._dead) < self.max_pending)
                self._dead.append(r)
            frame = _frame_key(events)
            if frame is not None:
                await self._put_frame(events, frame)
                self._changed.notify_all()
                return
            for e in events:
                if self.conflate and isinstance(e, PriceUpdated):
                    i = self._tail.get(e.symbol)
                    if i is not None:
                        self._buf[i] = e
                        self.stats["conflated"] += 1
                        continue
                await self._room()
                if isinstance(e, PriceUpdated):
                    self._tail[e.symbol] = len(self._buf)
                else:
                    self._tail.clear()
                self._buf.append(e)
            self._frame_tail = None
            self._changed.notify_all()

    async def _room(self) -> None:
        """Wait (under the lock) until the buffer has room for one more event."""
        if len(self._buf) >= self.max_pending:
            self.stats["backpressure_waits"] += 1
            self._changed.notify_all()  # wake the writer before waiting on it
            await self._changed.wait_for(lambda: len(self._buf) < self.max_pending)

    async def _put_frame(self, events: Sequence[Event], key: tuple[str, ...]) -> None:
        """A frame of several prices (one published instant) is conflated only as a whole: it
        replaces the frame at the buffer's end when that frame has the same symbols, so the log
        never holds part of one instant next to part of another."""
        tail = self._frame_tail
        if self.conflate and tail is not None and tail[1] == key \
                and tail[0] + len(events) == len(self._buf):
            self._buf[tail[0]:] = list(events)
            self.stats["conflated"] += len(events)
            return
        self._tail.clear()
        drains = self._drains
        for e in events:
            await self._room()
            self._buf.append(e)
        self._frame_tail = (len(self._buf) - len(events), key) if drains == self._drains else None

    # ------------------------------------------------------------------ the writer

    async def run(self) -> None:
        """The writer loop: append batches until ``close()``; never drops a batch."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._buf or self._dead or self._closed))
                if not self._buf and not self._dead and self._closed:
                    return
                batch = self._buf[: self.batch_max]
                del self._buf[: self.batch_max]
                self._tail.clear()
                self._frame_tail = None
                self._drains += 1
                dead, self._dead = self._dead, []
                self._busy = True
                self._changed.notify_all()
            try:
                if batch:
                    await self._with_retry("append", lambda b=batch: self._append(b))  # type: ignore[misc]
                for r in dead:
                    await self._with_retry("dead_letter", lambda r=r: self._dead_letter(r))  # type: ignore[misc]
            finally:
                async with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    async def _append(self, batch: list[Event]) -> None:
        ids = await self.log.append(batch)
        added = sum(1 for i in ids if i is not None)
        self.stats["appended"] += added
        self.stats["duplicates"] += len(ids) - added

    async def _dead_letter(self, r: Reject) -> None:
        await self.log.dead_letter(r.source, r.reason, r.detail, r.payload)
        self.stats["dead_lettered"] += 1

    async def _with_retry(self, op: str, call: Callable[[], Awaitable[None]]) -> None:
        waits = None
        while True:
            try:
                await call()
            except LogError as exc:
                if waits is None:
                    waits = delays(self.retry)
                self.unavailable = True
                health.REDIS.wait("ingest", str(exc))  # /readyz: intake paused
                self.stats["log_retries"] += 1
                delay = next(waits)
                log.error("ingest_log_unavailable", op=op, error=str(exc), retry_in_s=round(delay, 3),
                          retries=self.stats["log_retries"])
                await self.sleep(delay)
                continue
            if self.unavailable:
                self.unavailable = False
                health.REDIS.recovered("ingest")
                log.info("ingest_log_recovered", op=op)
            return

    async def drain(self) -> None:
        """Wait until every event and dead letter submitted so far is in the log."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._buf and not self._dead and not self._busy)

    async def close(self) -> None:
        """Drain, then let ``run()`` return."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def price_feed(self, config: WsConfig, source: str, parser: Parser, *,
                   backoff: Backoff | None = None) -> WsFeed:
        """A websocket price source whose frames go through this ingest's pipeline."""

        async def on_frame(raw: bytes | str) -> None:
            await self.submit_frame(source, parser, raw)

        return WsFeed(config, on_frame, backoff=backoff, name=source)

    @property
    def pending(self) -> int:
        return len(self._buf)
