"""Where a replay reads the log from: an NDJSON export, a Redis stream, or a Redis stream with
its archive (``keeper.store.archive``: the segments, then the hot log after them, read as one
log), in log order.

Both sources yield batches of ``(entry_id, event)`` pairs, decoded with
``keeper.domain.codec.decode`` (typed msgspec decoding, upcasting old versions). An entry that
cannot be decoded is *skipped and counted* (``SourceStats.bad``), exactly as the live projector
never saw it (the live log dead-letters it on read); a replay never writes anything anywhere,
not even a dead letter.

Positions are stream entry ids (``ms-seq``); ``after`` is exclusive and ``to`` inclusive, and
they compare as ``(ms, seq)`` integer pairs, never as strings.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from keeper.domain.codec import decode
from keeper.domain.events import Event
from keeper.errors import DecodeError
from keeper.store.entries import parse_id
from keeper.store.ndjson import iter_ndjson_batches

__all__ = [
    "BATCH",
    "NDJSON_BATCH",
    "Batch",
    "RawReader",
    "SourceStats",
    "archived_batches",
    "log_batches",
    "ndjson_batches",
]

if TYPE_CHECKING:
    from keeper.store.archive import Archive
    from keeper.store.redis_log import RedisEventLog

Batch = list[tuple[str, Event]]
"""Decoded entries of one batch, in log order."""

BATCH = 1000
"""Entries per batch read from a Redis log (one ``XREAD``/``XRANGE`` of 1,000 entries)."""
NDJSON_BATCH = 128
"""Entries per batch of an NDJSON export: small enough that a batch's decoded events are still in
the CPU's cache when the core handles them (a 64 KiB read holds about 250 lines). The batch sizes
measured against each other are in ``docs/performance.md``."""
_T = TypeVar("_T", bound=tuple[Any, ...])


@dataclass
class SourceStats:
    """What a source read: entries decoded, entries skipped as undecodable (by reason)."""

    read: int = 0
    bad: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    first: str | None = None
    last: str | None = None

    def skip(self, reason: str) -> None:
        self.bad += 1
        self.bad_reasons[reason] = self.bad_reasons.get(reason, 0) + 1


def _decode_batch(raw: list[tuple[str, bytes]], stats: SourceStats) -> Batch:
    out: Batch = []
    append = out.append
    for entry_id, payload in raw:
        try:
            append((entry_id, decode(payload)))
        except DecodeError as exc:
            stats.skip(exc.reason)
    _count(out, stats)
    return out


def _cut(raw: list[_T], to: tuple[int, int] | None) -> tuple[list[_T], bool]:
    """Drop entries past ``to`` (entries are ``(id, ...)`` pairs); the flag says the end was reached."""
    if to is None or not raw or parse_id(raw[-1][0]) <= to:
        return raw, False
    keep = [r for r in raw if parse_id(r[0]) <= to]
    return keep, True


def ndjson_batches(path: Path, *, after: str = "0-0", to: str | None = None,
                   batch: int = NDJSON_BATCH, stats: SourceStats | None = None) -> Iterator[Batch]:
    """Batches of decoded entries of an NDJSON export (``.gz`` by suffix), ``after < id <= to``.

    Lines are decoded in chunks, one typed pass each (``iter_ndjson_batches``); old versions are upcast and
    undecodable lines skipped and counted, as with ``decode``.
    """
    stats = stats if stats is not None else SourceStats()
    start = parse_id(after)
    skipping = start > (0, 0)
    end = parse_id(to) if to is not None else None

    def bad(_entry_id: str, _payload: bytes, exc: DecodeError) -> None:
        stats.skip(exc.reason)

    out: Batch = []
    for decoded in iter_ndjson_batches(path, on_bad=bad):
        chunk = decoded
        if skipping:
            chunk = [e for e in decoded if parse_id(e[0]) > start]
            if not chunk:
                continue
            skipping = False
        out = out + chunk if out else chunk
        while len(out) >= batch:
            head = out[:batch] if len(out) > batch else out
            out = out[batch:] if len(out) > batch else []
            head, done = _cut(head, end)
            _count(head, stats)
            yield head
            if done:
                return
    if out:
        out, _ = _cut(out, end)
        _count(out, stats)
        yield out


def _count(out: Batch, stats: SourceStats) -> None:
    if out:
        if stats.first is None:
            stats.first = out[0][0]
        stats.last = out[-1][0]
        stats.read += len(out)


class RawReader(Protocol):
    """What a log source needs of a log: ``RedisEventLog`` and ``MemoryEventLog`` both fit."""

    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]: ...


async def log_batches(log: RawReader, *, after: str = "0-0", to: str | None = None,
                      batch: int = BATCH, stats: SourceStats | None = None) -> AsyncGenerator[Batch, None]:
    """Batches of decoded entries read from a live log (``read_raw``, never blocking)."""
    stats = stats if stats is not None else SourceStats()
    end = parse_id(to) if to is not None else None
    position = after
    while True:
        raw = await log.read_raw(position, batch)
        if not raw:
            return
        position = raw[-1][0]
        raw, done = _cut(raw, end)
        yield _decode_batch(raw, stats)
        if done:
            return


async def archived_batches(archive: Archive, log: RedisEventLog | None, *, after: str = "0-0",
                           to: str | None = None, batch: int = BATCH,
                           stats: SourceStats | None = None) -> AsyncGenerator[Batch, None]:
    """Batches of an archive and its hot log as one log: the segments in order (decoded in
    chunks, as ``ndjson_batches``), then the hot log after the last archived entry read, through
    ``keeper.store.archive.ArchivedLog`` (entries trimmed while the replay ran are read from
    segments written meanwhile; a gap raises ``LogError``). ``after``/``to`` as elsewhere; an
    entry in both (archived, not yet trimmed) is read once."""
    from keeper.store.archive import ArchivedLog

    stats = stats if stats is not None else SourceStats()
    pos = parse_id(after)
    end = parse_id(to) if to is not None else None
    while True:
        todo = [seg for seg in archive.segments() if seg.last_key > pos]
        if not todo:
            break
        for seg in todo:
            for b in ndjson_batches(seg.path, after=f"{pos[0]}-{pos[1]}", to=to, batch=NDJSON_BATCH,
                                    stats=stats):
                if b:
                    pos = parse_id(b[-1][0])
                    yield b
            pos = max(pos, seg.last_key)
            if end is not None and pos >= end:
                return
    if log is None:
        return
    hot = ArchivedLog(log, archive)
    async for b in log_batches(hot, after=f"{pos[0]}-{pos[1]}", to=to, batch=batch, stats=stats):
        yield b
