"""In-memory twins of the ports, for unit tests (importable without redis).

- ``FakeClock``: time that moves only when told to.
- ``MemoryEventLog``: the ``EventLog`` contract of ``keeper.store.redis_log.RedisEventLog``
  (dedup by event id, dead letters, consumer groups with pending lists, ack, claim_stale),
  checked by the same contract suite (``tests/contract/test_event_log.py``).
- ``MemorySnapshotStore``: the ``SnapshotStore`` contract (keeps the previous snapshot too).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from keeper.domain.codec import encode
from keeper.domain.events import Event
from keeper.errors import LogError
from keeper.ports import DeadLetter, LogEntry
from keeper.store.entries import READ_SOURCE, event_id_of, format_id, parse_id, split_decoded

__all__ = ["FakeClock", "MemoryEventLog", "MemorySnapshotStore"]


class FakeClock:
    """A clock at ``now_us`` microseconds since the epoch; ``advance`` moves it forward."""

    def __init__(self, now_us: int = 0) -> None:
        self._now_us = now_us

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return self._now_us / 1_000_000

    def advance(self, us: int) -> None:
        if us < 0:
            raise ValueError("a clock does not go back")
        self._now_us += us


@dataclass
class _Group:
    last: tuple[int, int]
    # entry id -> (consumer, delivered at monotonic ms)
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)


class MemoryEventLog:
    """The event log in a list. Entry ids are ``ms-seq``, from ``clock`` (ms) like Redis does.

    Without a clock the ms part is 0 and seq counts from 1. Group idle times are measured on
    ``clock.monotonic()`` when given (tests advance it), else never idle unless ``min_idle_ms``
    is 0. Not thread-safe; a single event loop only.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.entries: list[tuple[str, bytes]] = []
        self._keys: list[tuple[int, int]] = []
        self._ids: set[str] = set()
        self._dead: list[DeadLetter] = []
        self._deadrefs: set[str] = set()
        self._groups: dict[str, _Group] = {}
        self._group_start: dict[str, str] = {}
        self._last = (0, 0)
        self._new = asyncio.Event()
        self.stats: Counter[str] = Counter()

    async def close(self) -> None:
        return None

    def _next_id(self) -> str:
        ms = self.clock.now_us() // 1000 if self.clock is not None else 0
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return format_id(*self._last)

    def _add(self, entry_id: str, payload: bytes) -> None:
        self.entries.append((entry_id, payload))
        self._keys.append(parse_id(entry_id))
        self._new.set()

    async def append(self, events: Sequence[Event]) -> list[str | None]:
        return await self.append_encoded([(e.event_id, encode(e)) for e in events])

    async def append_encoded(self, items: Sequence[tuple[str, bytes]]) -> list[str | None]:
        out: list[str | None] = []
        for event_id, payload in items:
            if event_id in self._ids:
                out.append(None)
                self.stats["duplicates"] += 1
                continue
            self._ids.add(event_id)
            entry_id = self._next_id()
            self._add(entry_id, bytes(payload))
            out.append(entry_id)
            self.stats["appended"] += 1
        return out

    async def append_raw(self, payloads: Sequence[bytes]) -> list[str]:
        out = []
        for p in payloads:
            entry_id = self._next_id()
            self._add(entry_id, bytes(p))
            out.append(entry_id)
        return out

    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int:
        for entry_id, payload in items:
            key = parse_id(entry_id)
            if key <= self._last:
                raise LogError(f"import: entry id {entry_id} is not above the last id")
            self._last = key
            self._add(entry_id, bytes(payload))
            eid = event_id_of(payload)
            if eid:
                self._ids.add(eid)
        return len(items)

    def _index_after(self, after: str) -> int:
        return bisect.bisect_right(self._keys, parse_id(after))

    async def _wait(self, block_ms: int | None, ready: bool) -> None:
        if ready or block_ms is None:
            return
        self._new.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new.wait(), block_ms / 1000 if block_ms else None)

    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]:
        i = self._index_after(after)
        await self._wait(block_ms, i < len(self.entries))
        return self.entries[i:i + count]

    async def read(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                   ) -> list[LogEntry]:
        entries, _ = await self.read_batch(after, count, block_ms)
        return entries

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        raw = await self.read_raw(after, count, block_ms)
        if not raw:
            return [], after
        good, bad = split_decoded(raw)
        for entry_id, payload, exc in bad:
            await self.dead_letter(READ_SOURCE, exc.reason, exc.detail, payload, ref=entry_id)
        return good, raw[-1][0]

    async def last_id(self) -> str:
        return self.entries[-1][0] if self.entries else "0-0"

    async def length(self) -> int:
        return len(self.entries)

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool:
        if ref:
            if ref in self._deadrefs:
                return False
            self._deadrefs.add(ref)
        self._dead.append(DeadLetter(format_id(0, len(self._dead) + 1), source, reason, detail,
                                     bytes(payload)))
        self.stats["dead_lettered"] += 1
        self.stats[f"dead_lettered.{reason}"] += 1
        return True

    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        return self._dead[:count]

    # ------------------------------------------------------------------ consumer groups

    def _now_ms(self) -> float:
        return self.clock.monotonic() * 1000 if self.clock is not None else 0.0

    def drop_groups(self) -> None:
        """Forget every group, as a Redis restart without persistence would (NOGROUP tests)."""
        self._groups.clear()

    async def ensure_group(self, group: str, start: str = "0") -> None:
        self._group_start[group] = start
        if group not in self._groups:
            last = self._last if start == "$" else parse_id(start)
            self._groups[group] = _Group(last)

    async def _group(self, group: str) -> _Group:
        g = self._groups.get(group)
        if g is None:  # NOGROUP: recreate, as RedisEventLog does
            self.stats["groups_recreated"] += 1
            await self.ensure_group(group, self._group_start.get(group, "0"))
            g = self._groups[group]
        return g

    async def _deliver(self, group: str, raw: list[tuple[str, bytes]]) -> list[LogEntry]:
        good, bad = split_decoded(raw)
        for entry_id, payload, exc in bad:
            await self.dead_letter(READ_SOURCE, exc.reason, exc.detail, payload, ref=entry_id)
        await self.ack(group, [b[0] for b in bad])
        return good

    async def read_group(self, group: str, consumer: str, count: int = 100,
                         block_ms: int | None = None) -> list[LogEntry]:
        g = await self._group(group)
        i = self._index_after(format_id(*g.last))
        await self._wait(block_ms, i < len(self.entries))
        i = self._index_after(format_id(*g.last))
        raw = self.entries[i:i + count]
        now = self._now_ms()
        for entry_id, _ in raw:
            g.pending[entry_id] = (consumer, now)
        if raw:
            g.last = parse_id(raw[-1][0])
        return await self._deliver(group, raw)

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        g = await self._group(group)
        for i in ids:
            g.pending.pop(i, None)

    async def claim_stale(self, group: str, consumer: str, min_idle_ms: int, count: int = 100
                          ) -> list[LogEntry]:
        g = await self._group(group)
        now = self._now_ms()
        by_id = dict(self.entries)
        raw: list[tuple[str, bytes]] = []
        for entry_id in sorted(g.pending, key=parse_id):
            if len(raw) >= count:
                break
            _, since = g.pending[entry_id]
            if now - since >= min_idle_ms:
                g.pending[entry_id] = (consumer, now)
                raw.append((entry_id, by_id[entry_id]))
        return await self._deliver(group, raw)

    def pending(self, group: str) -> dict[str, str]:
        """Pending entry id -> consumer (for tests)."""
        g = self._groups.get(group)
        return {} if g is None else {k: v[0] for k, v in g.pending.items()}


class MemorySnapshotStore:
    """Snapshots in a dict, newest and previous per name (same contract as the Redis store)."""

    def __init__(self) -> None:
        self.saved: dict[str, list[tuple[str, bytes]]] = {}

    async def save(self, name: str, offset: str, data: bytes) -> None:
        history = self.saved.setdefault(name, [])
        history.append((offset, bytes(data)))
        del history[:-2]

    async def load(self, name: str) -> tuple[str, bytes] | None:
        history = self.saved.get(name)
        return history[-1] if history else None
