"""Export a log to NDJSON and import it back, byte-exact; fast iteration for replay.

One line per entry, in log order::

    {"id":"1700000000000-0","e":{...the event payload, verbatim...}}
    {"id":"1700000000001-0","b64":"...base64 of a payload that is not one-line JSON..."}

The payload is copied verbatim (not re-encoded), so ``import_log(export_log(log))`` recreates the
same entry ids with the same payload bytes, bad entries included (those use ``b64``). A path
ending in ``.gz`` is gzip-compressed. Import goes only into an empty log.
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, cast

import msgspec

from keeper.domain.codec import decode
from keeper.domain.events import EVENT_TYPES, AnyEvent, Event
from keeper.errors import DecodeError, LogError
from keeper.ports import LogEntry
from keeper.store.lines import current_pairs

_PREFIX = b'{"id":"'
_MID_E = b'","e":'
_MID_B = b'","b64":"'
_BATCH = 1000


class _Readable(Protocol):
    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]: ...


class _Importable(Protocol):
    async def length(self) -> int: ...

    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int: ...


class _Line(msgspec.Struct):
    id: str
    e: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    b64: str | None = None


_line_decoder = msgspec.json.Decoder(_Line)


class _EventLine(msgspec.Struct, gc=False):
    id: str
    e: AnyEvent


_event_line_decoder = msgspec.json.Decoder(_EventLine)
_CURRENT: dict[type[Event], int] = {t: t.VERSION for t in EVENT_TYPES.values()}
_ONE_VERSION: int | None = next(iter(set(_CURRENT.values()))) if len(set(_CURRENT.values())) == 1 else None
"""The version every event type is at, when they all are at one (a chunk is then checked with
one set of its versions, not a lookup per line)."""


def _all_current(lines: list[_EventLine]) -> bool:
    """Whether every decoded line is at its type's current version (else: upcast line by line)."""
    if _ONE_VERSION is not None:
        return {ln.e.v for ln in lines} <= {_ONE_VERSION}
    current = _CURRENT
    return all(ln.e.v == current[type(ln.e)] for ln in lines)


def _is_json_line(payload: bytes) -> bool:
    if not payload.startswith(b"{") or b"\n" in payload or b"\r" in payload:
        return False
    try:
        msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return False
    return True


def export_lines(entries: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """NDJSON lines (with ``\\n``) for ``(entry id, payload)`` pairs."""
    for entry_id, payload in entries:
        eid = entry_id.encode()
        if _is_json_line(payload):
            yield _PREFIX + eid + _MID_E + payload + b"}\n"
        else:
            yield _PREFIX + eid + _MID_B + base64.b64encode(payload) + b'"}\n'


def _open(path: Path, mode: str, gz: bool | None = None) -> io.BufferedIOBase:
    if path.suffix == ".gz" if gz is None else gz:
        return gzip.GzipFile(path, mode + "b", compresslevel=6)
    return cast(io.BufferedIOBase, path.open(mode + "b"))


async def export_log(log: _Readable, path: Path) -> int:
    """Write every entry of ``log`` to ``path`` (``.gz`` compresses); returns the count."""
    n = 0
    after = "0-0"
    tmp = path.with_name(path.name + ".part")
    with _open(tmp, "w", gz=path.suffix == ".gz") as f:
        while True:
            raw = await log.read_raw(after, _BATCH)
            if not raw:
                break
            f.writelines(export_lines(raw))
            n += len(raw)
            after = raw[-1][0]
    tmp.replace(path)
    return n


def parse_line(line: bytes) -> tuple[str, bytes]:
    """One NDJSON line -> ``(entry id, payload bytes)``; our own lines are sliced, not parsed."""
    if line.startswith(_PREFIX):
        end = line.find(b'"', 7)
        rest = line[end:]
        if rest.startswith(_MID_E):
            tail = line.rstrip(b"\r\n")
            if tail.endswith(b"}"):
                return line[7:end].decode(), tail[end + 6:-1]
    try:
        obj = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise LogError(f"bad NDJSON line: {exc}: {line[:120]!r}") from exc
    if len(obj.e):
        return obj.id, bytes(obj.e)
    if obj.b64 is not None:
        return obj.id, base64.b64decode(obj.b64)
    raise LogError(f"NDJSON line without e or b64: {line[:120]!r}")


def iter_ndjson(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(entry id, payload)`` for each line of an export, in order (``.gz`` by suffix)."""
    with _open(path, "r") as f:
        for line in f:
            if line.strip():
                yield parse_line(line)


async def import_log(log: _Importable, path: Path) -> int:
    """Append every line of ``path`` to ``log`` with the same entry ids; ``log`` must be empty."""
    if await log.length():
        raise LogError("import: the target log is not empty (import only into a fresh log)")
    n = 0
    batch: list[tuple[str, bytes]] = []
    for item in iter_ndjson(path):
        batch.append(item)
        if len(batch) >= _BATCH:
            n += await log.import_entries(batch)
            batch = []
    if batch:
        n += await log.import_entries(batch)
    return n




_CHUNK = 1 << 16
"""Bytes read per step by ``iter_ndjson_batches`` (whole lines of it are decoded in one call).
64 KiB (~250 entries): the decoded events are still in the CPU cache when they are applied; 1 MiB
chunks made a 1M-event rebuild ~25% slower (265k/s against 335-390k/s)."""

_new_entry = tuple.__new__  # LogEntry(...) without its Python-level __new__ frame


def iter_ndjson_events(path: Path,
                       on_bad: Callable[[str, bytes, DecodeError], None] | None = None
                       ) -> Iterator[LogEntry]:
    """Decoded entries of an export, in order (``iter_ndjson_batches``, one entry at a time)."""
    for batch in iter_ndjson_batches(path, on_bad):
        for entry_id, event in batch:
            yield _new_entry(LogEntry, (entry_id, event))


def iter_ndjson_batches(path: Path,
                        on_bad: Callable[[str, bytes, DecodeError], None] | None = None
                        ) -> Iterator[list[tuple[str, Event]]]:
    """Decoded ``(entry id, event)`` pairs of an export, in order, one list per chunk read: the
    fast path for replay and rebuilds (no per-entry generator step).

    The file is read in chunks of whole lines (``_CHUNK``), each decoded in one typed msgspec
    call (id and event together) when every line of it is a current-version event. A chunk
    with anything else (an old version to upcast, a ``b64`` line, a bad payload) goes line by
    line through ``parse_line`` + ``keeper.domain.codec.decode``, so the result is the same as
    decoding ``iter_ndjson``. Undecodable entries are passed to ``on_bad`` (or skipped). Lists
    may be empty (a chunk of bad lines); their sizes follow the chunking, not a count.
    """
    with _open(path, "r") as f:
        # read into one buffer: the partial line a read ends with moves to its front (no
        # ``tail + chunk`` copy), and whole lines are decoded from a view of it (no slice copy)
        size = _CHUNK
        buf = bytearray(size)
        view = memoryview(buf)
        held = 0  # bytes of a partial line at the front of ``buf``
        decode_lines = _event_line_decoder.decode_lines
        while True:
            if held == size:  # a line longer than the buffer: grow it
                size *= 2
                view.release()
                grown = bytearray(size)
                grown[:held] = buf
                buf, view = grown, memoryview(grown)
            n = f.readinto(view[held:])
            if not n:
                if held:
                    yield list(_slow_lines(bytes(buf[:held]).splitlines(keepends=True), on_bad))
                return
            end = held + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:
                held = end
                continue
            body = view[:cut]
            try:
                lines = decode_lines(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                lines = None
            if lines is not None:
                pairs = current_pairs(lines, _ONE_VERSION) if _ONE_VERSION is not None else None
                if pairs is None and _ONE_VERSION is None and _all_current(lines):
                    pairs = [(ln.id, ln.e) for ln in lines]
            else:
                pairs = None
            if pairs is None:
                pairs = list(_slow_lines(bytes(body).splitlines(keepends=True), on_bad))
            body.release()
            held = end - cut
            buf[:held] = buf[cut:end]  # same length: a move, never a resize
            yield pairs


def _slow_lines(lines: Iterable[bytes], on_bad: Callable[[str, bytes, DecodeError], None] | None
                ) -> Iterator[LogEntry]:
    """``iter_ndjson_events`` one line at a time (old versions, ``b64`` lines, bad payloads)."""
    for line in lines:
        try:
            ln = _event_line_decoder.decode(line)
            ev: Event = ln.e
            if ev.v == type(ev).VERSION:
                yield LogEntry(ln.id, ev)
                continue
        except (msgspec.DecodeError, msgspec.ValidationError):
            if not line.strip():
                continue
        entry_id, payload = parse_line(line)
        try:
            yield LogEntry(entry_id, decode(payload))
        except DecodeError as exc:
            if on_bad is not None:
                on_bad(entry_id, payload, exc)
