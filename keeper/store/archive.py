"""The archive: a shard's log entries older than the hot window, in compressed segment files.

Layout (``root`` is ``[retention] archive_dir``, any mounted store)::

    <root>/<prefix>.<shard>/seg_<first id>_<last id>_<count>.ndjson.gz

A segment is gzip NDJSON in the export format (``keeper.store.ndjson``: one
``{"id":...,"e":...}`` line per entry, payloads verbatim, ``b64`` for one that is not one-line
JSON), so ``zcat`` of the segments in order is an export of the archived part of the log and
``keeper replay --ndjson`` reads any one of them. Its name carries the first and last entry id and
the entry count: the archive's index is its directory listing, and its high-water mark (the
last archived entry id) is the largest last id named there.

Writing (``SegmentWriter``): a temporary ``.seg_*.tmp`` file, fsynced, renamed to its name, the
directory fsynced. A crash leaves either no segment (the temporary one is removed by the next
``Archive.sweep``) or a whole one; the next archiving run starts after the high-water mark of
the files, so nothing is archived twice and nothing is lost between a segment and the record of
it (the mark kept in Redis is a copy, for status). Readers skip an entry id not above the last
one they returned, so even overlapping segments read as one log.

Reading: ``Archive.iter_raw(after)`` (raw ``(id, payload)`` pairs in log order), and
``ArchivedLog``: a ``RedisEventLog`` whose reads continue into the archive where the hot log
was trimmed (a reader positioned below the trim point reads the archive first, then the hot
log), so a projector restarting from an offset that was trimmed never skips an entry silently.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import redis.exceptions
import structlog

from keeper.domain.events import Event
from keeper.errors import LogError
from keeper.ports import DeadLetter, LogEntry
from keeper.store import scripts
from keeper.store.entries import READ_SOURCE, event_id_of, parse_id, split_decoded
from keeper.store.ndjson import export_lines, parse_line
from keeper.store.redis_log import RedisEventLog, wrap_errors

__all__ = [
    "COMPRESS_LEVEL",
    "SUFFIX",
    "Archive",
    "ArchiveCursor",
    "ArchivedLog",
    "Segment",
    "SegmentWriter",
    "max_deleted",
    "meta_key",
    "open_archive",
    "parse_segment",
    "segment_name",
    "trim_log",
]

log = structlog.get_logger("keeper.archive")

SUFFIX = ".ndjson.gz"
COMPRESS_LEVEL = 3
"""gzip level of segments: 3 compresses the log's JSON about as well as 6 (the export's), and
faster (``bench/bench_retention.py``; ``docs/performance.md``)."""


@dataclass(frozen=True, order=True)
class Segment:
    """One segment file: entries ``first``..``last`` (ids, inclusive), ``count`` of them."""

    key: tuple[int, int]
    first: str
    last: str
    count: int
    path: Path

    @property
    def last_key(self) -> tuple[int, int]:
        return parse_id(self.last)


def segment_name(first: str, last: str, count: int) -> str:
    return f"seg_{first}_{last}_{count}{SUFFIX}"


def parse_segment(path: Path) -> Segment | None:
    """The segment a file name describes, or None for another file."""
    name = path.name
    if not (name.startswith("seg_") and name.endswith(SUFFIX)):
        return None
    parts = name[4:-len(SUFFIX)].split("_")
    if len(parts) != 3:
        return None
    first, last, count = parts
    try:
        key, last_key, n = parse_id(first), parse_id(last), int(count)
    except ValueError:
        return None
    if n < 1 or last_key < key:
        return None
    return Segment(key, first, last, n, path)


class Archive:
    """One shard's archive directory (see the module docstring)."""

    def __init__(self, root: Path, *, shard: str = "0", prefix: str = "keeper") -> None:
        self.root = Path(root)
        self.dir = self.root / f"{prefix}.{shard}"

    @classmethod
    def of(cls, root: Path, lg: RedisEventLog) -> Archive:
        """The archive of ``lg``'s shard under ``root``."""
        return cls(root, shard=lg.shard, prefix=lg.key.rsplit(":{", 1)[0])

    def segments(self) -> list[Segment]:
        """Every segment, in log order (by first entry id)."""
        try:
            names = list(self.dir.iterdir())
        except FileNotFoundError:
            return []
        return sorted(s for s in (parse_segment(p) for p in names) if s is not None)

    def high_water(self, segments: list[Segment] | None = None) -> str:
        """The last archived entry id (``"0-0"`` for an empty archive)."""
        segs = self.segments() if segments is None else segments
        return max((s.last for s in segs), key=parse_id, default="0-0")

    def entries(self, segments: list[Segment] | None = None) -> int:
        """How many entries the segments hold."""
        return sum(s.count for s in (self.segments() if segments is None else segments))

    def sweep(self) -> int:
        """Remove temporary files a crashed writer left; returns how many."""
        n = 0
        with contextlib.suppress(FileNotFoundError):
            for p in self.dir.glob(".seg_*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def iter_raw(self, after: str = "0-0", to: str | None = None) -> Iterator[tuple[str, bytes]]:
        """``(id, payload)`` of archived entries with ``after < id <= to``, in log order; the
        listing is read again at the end, so segments written meanwhile are read too."""
        pos = parse_id(after)
        end = parse_id(to) if to is not None else None
        while True:
            todo = [s for s in self.segments() if s.last_key > pos]
            if not todo:
                return
            for seg in todo:
                for entry_id, payload in _segment_lines(seg.path):
                    k = parse_id(entry_id)
                    if k <= pos:
                        continue
                    if end is not None and k > end:
                        return
                    pos = k
                    yield entry_id, payload
                pos = max(pos, seg.last_key)


    def event_ids(self, after: str, before: tuple[int, int]) -> Iterator[tuple[list[str], str]]:
        """The event ids of archived entries with ``after < id < before``, in chunks of whole
        lines: ``(event ids, the chunk's last entry id)`` (an entry without one adds nothing)."""
        pos = parse_id(after)
        for seg in self.segments():
            if seg.last_key <= pos:
                continue
            if seg.key >= before:
                return
            with gzip.open(seg.path, "rb") as f:
                held = b""
                while chunk := f.read(_CHUNK):
                    chunk = held + chunk
                    cut = chunk.rfind(b"\n") + 1
                    held, body = chunk[cut:], chunk[:cut]
                    if body:
                        done, ids, last = _chunk_ids(body, pos, before)
                        if last:
                            pos = parse_id(last)
                            yield ids, last
                        if done:
                            return
                if held.strip():
                    done, ids, last = _chunk_ids(held, pos, before)
                    if last:
                        pos = parse_id(last)
                        yield ids, last
                    if done:
                        return
            pos = max(pos, seg.last_key)


_CHUNK = 1 << 20


class _IdEvent(msgspec.Struct):
    event_id: str = ""


class _IdLine(msgspec.Struct):
    id: str
    e: _IdEvent | None = None


_id_lines = msgspec.json.Decoder(_IdLine)


def _chunk_ids(body: bytes, pos: tuple[int, int], before: tuple[int, int]
               ) -> tuple[bool, list[str], str]:
    """``(before reached, event ids, last entry id)`` of the lines of ``body`` after ``pos``."""
    try:
        lines = [(ln.id, ln.e.event_id if ln.e is not None else "") for ln in _id_lines.decode_lines(body)]
    except (msgspec.DecodeError, msgspec.ValidationError):  # an unusual payload: line by line
        lines = []
        for line in body.splitlines():
            if line.strip():
                entry_id, payload = parse_line(line)
                lines.append((entry_id, event_id_of(payload)))
    ids: list[str] = []
    last = ""
    for entry_id, event_id in lines:
        k = parse_id(entry_id)
        if k <= pos:
            continue
        if k >= before:
            return True, ids, last
        if event_id:
            ids.append(event_id)
        last = entry_id
    return False, ids, last


def _segment_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(id, payload)`` of each line of a segment (our own writing: lines are one entry each)."""
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield parse_line(line)
    except (OSError, EOFError, zlib.error) as exc:
        raise LogError(f"{path}: cannot read the segment: {exc}") from None


class SegmentWriter:
    """Writes entries into segments of at most ``max_entries`` (see the module docstring).

    ``add`` entries in log order; ``seal`` ends the open segment (renamed into place) and
    returns it; ``abort`` drops the open one. Blocking file I/O: run it in a thread."""

    def __init__(self, archive: Archive, *, max_entries: int, level: int = COMPRESS_LEVEL) -> None:
        self.archive = archive
        self.max_entries = max_entries
        self.level = level
        self._tmp: Path | None = None
        self._raw: BinaryIO | None = None
        self._gz: gzip.GzipFile | None = None
        self.first = ""
        self.last = ""
        self.count = 0
        self.sealed: list[Segment] = []

    def _open(self, first: str) -> None:
        self.archive.dir.mkdir(parents=True, exist_ok=True)
        self._tmp = self.archive.dir / f".seg_{first}_{os.getpid()}.tmp"
        self._raw = self._tmp.open("wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=self.level, mtime=0)
        self.first, self.count = first, 0

    def add(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Write entries (log order, above everything written before); full segments are sealed."""
        batch: list[tuple[str, bytes]] = []
        for item in entries:
            if self._gz is None:
                self._open(item[0])
            batch.append(item)
            if self.count + len(batch) >= self.max_entries:
                self._write(batch)
                batch = []
                self.seal()
        if batch:
            self._write(batch)

    def _write(self, batch: list[tuple[str, bytes]]) -> None:
        assert self._gz is not None
        self._gz.writelines(export_lines(batch))
        self.count += len(batch)
        self.last = batch[-1][0]

    def seal(self) -> Segment | None:
        """Close the open segment, fsync it and rename it into place; None when none is open."""
        if self._gz is None or self._raw is None or self._tmp is None:
            return None
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        path = self.archive.dir / segment_name(self.first, self.last, self.count)
        os.replace(self._tmp, path)
        _fsync_dir(self.archive.dir)
        seg = Segment(parse_id(self.first), self.first, self.last, self.count, path)
        self.sealed.append(seg)
        self._gz = self._raw = self._tmp = None
        return seg

    def abort(self) -> None:
        """Drop the open segment (nothing of it is archived)."""
        if self._gz is not None and self._raw is not None:
            with contextlib.suppress(OSError, ValueError):
                self._gz.close()
                self._raw.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._gz = self._raw = self._tmp = None
        self.count = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArchiveCursor:
    """Sequential reads of an archive by position: a read continuing where the last one ended
    goes on in the open file, any other position opens the segment that holds it."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._it: Iterator[tuple[str, bytes]] | None = None
        self._at: str | None = None

    def read(self, after: str, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` archived entries with id > ``after``."""
        if self._it is None or self._at != after:
            self._it = self.archive.iter_raw(after)
        out: list[tuple[str, bytes]] = []
        for item in self._it:
            out.append(item)
            if len(out) >= count:
                break
        if out:
            self._at = out[-1][0]
        else:
            self._it, self._at = None, None
        return out

    def close(self) -> None:
        self._it, self._at = None, None


async def trim_log(lg: RedisEventLog, minid: str) -> int:
    """``XTRIM MINID minid`` recording the largest id removed as the stream's
    max-deleted-entry-id (``scripts.TRIM``); returns how many entries went."""
    async with wrap_errors("xtrim"):
        return int(await lg.client.eval(scripts.TRIM, 1, lg.key, minid))


async def max_deleted(lg: RedisEventLog) -> str:
    """The largest entry id trimmed from the hot log (``"0-0"``: none, or no stream), as
    ``trim_log`` records it. Entries above it that existed are all still there (trimming cuts
    from the front), so a reader after it loses nothing by reading Redis."""
    async with wrap_errors("xinfo"):
        try:
            info: Any = await lg.client.xinfo_stream(lg.key)
        except redis.exceptions.ResponseError as exc:
            if "no such key" in str(exc):
                return "0-0"
            raise
    value = info.get("max-deleted-entry-id", b"0-0")
    return value.decode() if isinstance(value, bytes) else str(value)


class ArchivedLog:
    """A ``RedisEventLog`` read as one log with its archive: entries the hot log no longer
    holds come from the archive, the rest from Redis. Everything but reading is the inner
    log's (``__getattr__``). Entries read from the archive that do not decode are skipped and
    counted (``stats["archive_undecodable"]``): they were dead-lettered when they were live.

    ``LogError`` when the hot log was trimmed past what the archive holds (another archive
    directory, or lost files): a gap is never read over.
    """

    def __init__(self, inner: RedisEventLog, archive: Archive) -> None:
        self.inner = inner
        self.archive = archive
        self._cursor = ArchiveCursor(archive)
        self._trimmed = (0, 0)
        """The hot log's max deleted id as last seen: below it, reads start in the archive."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # ``keeper.ports.EventLog``'s writing side, spelled out (``__getattr__`` does not satisfy a
    # Protocol for the type checker)
    async def append(self, events: Sequence[Event]) -> list[str | None]:
        return await self.inner.append(events)

    async def last_id(self) -> str:
        return await self.inner.last_id()

    async def length(self) -> int:
        """The hot log's length (what Redis holds)."""
        return await self.inner.length()

    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        return await self.inner.dead_letters(count)

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool:
        return await self.inner.dead_letter(source, reason, detail, payload, ref)

    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]:
        raw, _ = await self._read(after, count, block_ms)
        return raw

    async def _read(self, after: str, count: int, block_ms: int | None
                    ) -> tuple[list[tuple[str, bytes]], bool]:
        """Raw entries after ``after`` and whether they came from the archive."""
        pos = parse_id(after)
        if pos < self._trimmed:
            got = self._cursor.read(after, count)
            if got:
                return got, True
        raw = await self.inner.read_raw(after, count, block_ms)
        trimmed = parse_id(await max_deleted(self.inner))
        self._trimmed = max(self._trimmed, trimmed)
        if pos >= trimmed:
            return raw, False
        # entries after ``after`` were trimmed: the archive has them (a gap is an error)
        got = self._cursor.read(after, count)
        if len(got) < count and (not got or parse_id(got[-1][0]) < trimmed):
            end = got[-1][0] if got else self.archive.high_water()
            raise LogError(f"read after {after}: the hot log was trimmed up to "
                           f"{trimmed[0]}-{trimmed[1]} but the archive at {self.archive.dir} ends at "
                           f"{end}: the entries between are in no archive this reader knows")
        return got, True

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        raw, archived = await self._read(after, count, block_ms)
        if not raw:
            return [], after
        if not archived:
            good, bad = split_decoded(raw)
            for entry_id, payload, exc in bad:
                await self.inner.dead_letter(READ_SOURCE, exc.reason, exc.detail, payload, ref=entry_id)
            return good, raw[-1][0]
        good, bad = split_decoded(raw)
        if bad:
            self.inner.stats["archive_undecodable"] += len(bad)
        return good, raw[-1][0]

    async def read(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                   ) -> list[LogEntry]:
        entries, _ = await self.read_batch(after, count, block_ms)
        return entries


def meta_key(lg: RedisEventLog) -> str:
    """The shard's retention hash (``keeper.store.retention``)."""
    return lg.key.removesuffix(":log") + ":retention"


async def open_archive(lg: RedisEventLog, root: Path | None, *, start: str = "0-0") -> Archive | None:
    """The archive to read ``lg`` with: under ``root``, else where retention recorded it; None
    when none is needed (nothing after ``start`` was trimmed) or none exists.

    ``LogError`` when entries after ``start`` were trimmed and no archive here holds them (the
    message names the recorded directory and ``--archive``): a reader never starts over a gap.
    """
    recorded: Any = None
    if root is None:
        async with wrap_errors("retention_state"):
            recorded = await lg.client.hget(meta_key(lg), "archive_dir")
        if recorded is not None:
            root = Path(recorded.decode())
    archive = Archive.of(root, lg) if root is not None else None
    trimmed = parse_id(await max_deleted(lg))
    if trimmed <= parse_id(start):
        return archive if archive is not None and archive.segments() else None
    segs = archive.segments() if archive is not None else []
    if archive is None or not segs or parse_id(archive.high_water(segs)) < trimmed:
        where = f"{archive.dir}" if archive is not None else "no archive directory recorded"
        raise LogError(f"{lg.key} was trimmed up to {trimmed[0]}-{trimmed[1]} and its archive is not "
                       f"readable here ({where}): pass --archive DIR, the [retention] archive_dir "
                       f"the log was archived to")
    return archive
