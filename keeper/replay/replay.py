"""Replay: feed recorded log entries, in log order, through the same core as the daemon.

The core is the keeper's own (``KeeperCore``: state, exposure index, screen and ``decide``), fed
exactly what the live projector fed it: every entry, the recorded ``LiquidationIntended`` entries
included (they mark buckets busy, as live). When no per-entry hook is set and the core has
``handle_batch(entries)`` (same semantics as ``handle`` on each entry in turn, fewer calls), a
whole batch goes in at once; otherwise ``core.handle(entry_id, event)`` per entry (explain needs
the state between entries).

A live run with several keeper cores (one per profile) is replayed by ``MultiCore``: every core
sees every entry, as every live projector read the whole log, and their decisions are merged in
log order (by trigger position). What the core
returns (the decisions it re-derives) is collected, never appended and never submitted: there is
no executor, no timer and no wall clock in a replay; the only time is the log's own
(``ts_event`` of the entries, which the core reads from the events).

Where it stops: ``to`` (an entry id, inclusive) or ``until_us`` (stop before the first entry whose
``ts_event`` is later: event times are not monotonic in a log, so this is "the log as it stood
when it first showed a later time").

The cyclic garbage collector is paused during the hot loop (with millions of live containers it
is a first-order cost: ``docs/performance.md``), and whatever existed before (a restored
snapshot) is frozen.
"""

from __future__ import annotations

import gc
import heapq
import sys
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Protocol

import structlog

from keeper.domain.events import Event, LiquidationIntended
from keeper.replay.route import recorded
from keeper.replay.source import Batch
from keeper.store.entries import parse_id

__all__ = [
    "BatchHook",
    "Core",
    "DerivedHook",
    "EntryHook",
    "MultiCore",
    "Progress",
    "ReplayResult",
    "Replayer",
    "gc_paused",
    "handle_batch",
    "replay_async",
    "replay_batches",
]

log = structlog.get_logger("keeper.replay")


class Core(Protocol):
    """What a replay drives (``keeper.projector.Core`` minus the parts only the shell uses)."""

    @property
    def offset(self) -> str: ...

    def handle(self, entry_id: str, event: Event) -> Sequence[Event]: ...


EntryHook = Callable[[str, Event], None]
DerivedHook = Callable[[str, Event, Sequence[Event]], None]
BatchHook = Callable[[Batch, Sequence[Event]], None]
"""``after_batch(batch, derived)``: a whole batch went in, ``derived`` is what came out."""


def _trigger_key(e: Event) -> tuple[int, int]:
    if type(e) is LiquidationIntended:
        assert isinstance(e, LiquidationIntended)
        return parse_id(e.decision.trigger)
    return (-1, -1)


def handle_batch(core: Core, batch: Batch) -> Sequence[Event]:
    """``core.handle_batch(batch)`` when the core has it, else ``handle`` on each entry."""
    hb = getattr(core, "handle_batch", None)
    if hb is not None:
        out: Sequence[Event] = hb(batch)
        return out
    res: list[Event] = []
    handle = core.handle
    for entry_id, event in batch:
        o = handle(entry_id, event)
        if o:
            res.extend(o)
    return res


class MultiCore:
    """Several cores fed the same entries (the live run's cores, one per profile).

    ``handle``/``handle_batch`` return every core's decisions merged in log order (by trigger
    position; a core's own output is already in log order, ties keep the cores' order).
    ``last`` holds what each core returned for the last entry (per-entry hooks of one core).
    """

    def __init__(self, cores: Sequence[Core], names: Sequence[str] | None = None) -> None:
        if not cores:
            raise ValueError("MultiCore needs at least one core")
        self.cores = list(cores)
        self.names = list(names) if names is not None else [str(i) for i in range(len(cores))]
        self.last: list[Sequence[Event]] = [() for _ in self.cores]

    @property
    def offset(self) -> str:
        """The lowest offset of the cores (they move together once started from one place)."""
        return min((c.offset for c in self.cores), key=parse_id)

    def handle(self, entry_id: str, event: Event) -> Sequence[Event]:
        outs = [c.handle(entry_id, event) for c in self.cores]
        self.last = outs
        if len(outs) == 1:
            return outs[0]
        return [e for o in outs for e in o]  # one entry: every decision has the same trigger

    def handle_batch(self, batch: Batch) -> Sequence[Event]:
        outs = [handle_batch(c, batch) for c in self.cores]
        if len(outs) == 1:
            return outs[0]
        return list(heapq.merge(*outs, key=_trigger_key))


@contextmanager
def gc_paused(*, freeze: bool = True) -> Iterator[None]:
    """Freeze what exists, disable the collector for the block, restore it after.

    ``freeze=False`` in a forked worker: ``gc.freeze()`` rewrites the header of every object the
    worker inherited from its parent, copying each of those pages (copy-on-write) into it."""
    was = gc.isenabled()
    if freeze:
        gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        if freeze:
            gc.unfreeze()


class Progress:
    """A one-line progress report on stderr, refreshed at most every ``every_s`` seconds.

    Enabled when ``force`` is true or the stream is a TTY; otherwise it writes nothing.
    """

    def __init__(self, total: int | None = None, *, force: bool = False, stream: IO[str] | None = None,
                 every_s: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.total = total
        self.every_s = every_s
        self.t0 = time.monotonic()
        self._last = 0.0
        self.shown = 0

    def update(self, done: int, position: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        self._write(done, position, now)

    def _write(self, done: int, position: str, now: float) -> None:
        rate = done / max(now - self.t0, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        self.stream.write(f"\rreplay: {done:,}{of} entries at {position}  {rate:,.0f}/s ")
        self.stream.flush()
        self.shown += 1

    def close(self, done: int, position: str) -> None:
        if self.enabled:
            self._write(done, position, time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class ReplayResult:
    """What a replay went through and what it re-derived."""

    entries: int = 0
    first: str | None = None
    last: str | None = None
    derived: list[tuple[str, LiquidationIntended]] = field(default_factory=list)
    """(trigger entry id, intent) for every decision the core made, in log order."""
    recorded: int = 0
    stopped: str = "end"
    """``end`` (the source ran out), ``to`` or ``until``."""
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.entries / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Replayer:
    """Feeds batches into ``core``; the hooks see each entry before and after the core does.

    ``before(entry_id, event)`` runs before ``core.handle`` (explain reads health before);
    ``after(entry_id, event, derived)`` runs after it with what the core returned. Without
    either, batches go through ``core.handle_batch`` when the core has it, and ``after_batch``
    (if set) sees each batch with what came out.
    """

    def __init__(self, core: Core, *, to: str | None = None, until_us: int | None = None,
                 before: EntryHook | None = None, after: DerivedHook | None = None,
                 after_batch: BatchHook | None = None, progress: Progress | None = None) -> None:
        self.core = core
        self.after_batch = after_batch
        self.batched = before is None and after is None and hasattr(core, "handle_batch")
        """Whether whole batches go through ``handle_batch`` (no per-entry hook)."""
        self.to = parse_id(to) if to is not None else None
        self.until_us = until_us
        self.before = before
        self.after = after
        self.progress = progress
        self.result = ReplayResult()
        self.done = False

    def feed(self, batch: Batch) -> bool:
        """Handle one batch; returns False once the stop position is reached."""
        if self.done or not batch:
            return not self.done
        res = self.result
        handle = self.core.handle
        derived = res.derived
        before, after, until = self.before, self.after, self.until_us
        if self.to is not None and parse_id(batch[-1][0]) > self.to:
            batch = [b for b in batch if parse_id(b[0]) <= self.to]
            self.done = True
            res.stopped = "to"
        if self.batched:
            self._feed_batch(batch)
            return not self.done
        n = 0
        last = res.last
        start = len(derived)
        for entry_id, event in batch:
            if until is not None and event.ts_event > until:
                self.done = True
                res.stopped = "until"
                break
            if before is not None:
                before(entry_id, event)
            out = handle(entry_id, event)
            if out:
                for e in out:
                    if type(e) is LiquidationIntended:
                        derived.append((entry_id, e))
            if type(event) is LiquidationIntended:
                res.recorded += 1
            if after is not None:
                after(entry_id, event, out)
            n += 1
            last = entry_id
        if n:
            self._advance(batch[0][0], last, n)
        if self.after_batch is not None and n:
            self.after_batch(batch[:n], [e for _, e in derived[start:]])
        return not self.done

    def _advance(self, first: str, last: str | None, n: int) -> None:
        res = self.result
        if res.first is None:
            res.first = first
        res.last = last
        res.entries += n
        if self.progress is not None and last is not None:
            self.progress.update(res.entries, last)

    def _feed_batch(self, batch: Batch) -> None:
        res = self.result
        until = self.until_us
        if until is not None:
            for i, (_, event) in enumerate(batch):
                if event.ts_event > until:
                    batch = batch[:i]
                    self.done = True
                    res.stopped = "until"
                    break
        if not batch:
            return
        out = handle_batch(self.core, batch)
        derived = res.derived
        for e in out:
            if type(e) is LiquidationIntended:
                assert isinstance(e, LiquidationIntended)
                derived.append((e.decision.trigger, e))
        res.recorded += len(recorded(batch))
        if self.after_batch is not None:
            self.after_batch(batch, out)
        self._advance(batch[0][0], batch[-1][0], len(batch))


def replay_batches(core: Core, batches: Iterable[Batch], *, to: str | None = None,
                   until_us: int | None = None, before: EntryHook | None = None,
                   after: DerivedHook | None = None, progress: Progress | None = None,
                   after_batch: BatchHook | None = None) -> ReplayResult:
    """Run a whole synchronous source (an NDJSON export) through ``core`` with the GC paused."""
    r = Replayer(core, to=to, until_us=until_us, before=before, after=after, progress=progress,
                 after_batch=after_batch)
    t0 = time.perf_counter()
    with gc_paused():
        for batch in batches:
            if not r.feed(batch):
                break
    r.result.elapsed_s = time.perf_counter() - t0
    _finish(r)
    return r.result


async def replay_async(core: Core, batches: AsyncIterable[Batch], *, to: str | None = None,
                       until_us: int | None = None, before: EntryHook | None = None,
                       after: DerivedHook | None = None, progress: Progress | None = None,
                       after_batch: BatchHook | None = None) -> ReplayResult:
    """``replay_batches`` for an async source (``source.log_batches`` over Redis)."""
    r = Replayer(core, to=to, until_us=until_us, before=before, after=after, progress=progress,
                 after_batch=after_batch)
    t0 = time.perf_counter()
    with gc_paused():
        async for batch in batches:
            if not r.feed(batch):
                break
    r.result.elapsed_s = time.perf_counter() - t0
    _finish(r)
    return r.result


def _finish(r: Replayer) -> None:
    res = r.result
    if res.stopped == "end" and r.to is not None and res.last is not None and parse_id(res.last) >= r.to:
        res.stopped = "to"  # the source already cut at ``to``
    if r.progress is not None:
        r.progress.close(res.entries, res.last or "-")
    log.info("replay_done", entries=res.entries, first=res.first, last=res.last,
             derived=len(res.derived), recorded=res.recorded, stopped=res.stopped,
             elapsed_s=round(res.elapsed_s, 3), events_per_s=round(res.events_per_s))
