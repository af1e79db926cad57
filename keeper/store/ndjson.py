"""Export a log to NDJSON, read an export back, byte-exact; fast iteration for replay.

One line per entry, in log order::

    {"id":"1700000000000-0","e":{...the event payload, verbatim...}}
    {"id":"1700000000001-0","b64":"...base64 of a payload that is not one-line JSON..."}

The payload is copied verbatim (not re-encoded), so importing an export
(``keeper.store.ndjson_import``) recreates the same entry ids with the same payload bytes, bad
entries included (those use ``b64``). A path ending in ``.gz`` is gzip-compressed.

Reading: ``iter_ndjson`` yields each line's ``(entry id, payload)``; ``iter_ndjson_batches`` and
``iter_ndjson_events`` decode them, the same result as decoding ``iter_ndjson`` line by line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, cast

import msgspec

from keeper.domain.codec import decode
from keeper.domain.events import EVENT_TYPES, AnyEvent, Event
from keeper.errors import DecodeError, LogError
from keeper.jsonlimits import MAX_DEPTH, MAX_LINE_BYTES, deeper_than, size_text
from keeper.ports import LogEntry
from keeper.store.lines import current_pairs

__all__ = [
    "export_lines",
    "export_log",
    "iter_ndjson",
    "iter_ndjson_batches",
    "iter_ndjson_events",
    "numbered_lines",
    "parse_line",
]

_PREFIX = b'{"id":"'
_MID_E = b'","e":'
_MID_B = b'","b64":"'
_BATCH = 1000


class _Readable(Protocol):
    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]: ...


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
    if deeper_than(payload):  # exported as b64; never handed to the recursive decoder
        return False
    try:
        msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # nested too deep: exported as b64
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
    """Write every entry of ``log`` to ``path`` (``.gz`` compresses); returns the count.

    Written to ``path.part`` and renamed at the end: ``path`` is whole or untouched.
    ``LogError`` naming the file when it cannot be written (no such folder, no space, ...).
    """
    if not path.parent.is_dir():
        raise LogError(f"{path}: cannot write: folder {path.parent} does not exist (create it first)")
    n = 0
    after = "0-0"
    tmp = path.with_name(path.name + ".part")
    try:
        with _open(tmp, "w", gz=path.suffix == ".gz") as f:
            while True:
                raw = await log.read_raw(after, _BATCH)
                if not raw:
                    break
                f.writelines(export_lines(raw))
                n += len(raw)
                after = raw[-1][0]
        tmp.replace(path)
    except BaseException as exc:  # a failed or cancelled export leaves no ``.part`` behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise LogError(f"{path}: cannot write: {_os_reason(exc)}") from None
        raise
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
    if deeper_than(line):  # ``e`` would be skipped recursively
        raise LogError(f"bad NDJSON line: nested deeper than {MAX_DEPTH}: {line[:120]!r}")
    try:
        obj = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise LogError(f"bad NDJSON line: {exc}: {line[:120]!r}") from exc
    except RecursionError:  # ``e`` is skipped recursively: a line nested too deep
        raise LogError(f"bad NDJSON line: nested too deep: {line[:120]!r}") from None
    if len(obj.e):
        return obj.id, bytes(obj.e)
    if obj.b64 is not None:
        try:
            return obj.id, base64.b64decode(obj.b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LogError(f"bad NDJSON line: b64 is not base64 ({exc}): {line[:120]!r}") from None
    raise LogError(f"NDJSON line without e or b64: {line[:120]!r}")


def numbered_lines(path: Path, max_bytes: int = MAX_LINE_BYTES
                   ) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line)`` for each non-blank line of a file (``.gz`` by suffix); a line
    longer than ``max_bytes`` (newline excluded) is ``None``, never read whole.

    ``LogError`` names the file for what cannot be read: missing, unreadable, not gzip, truncated.
    """
    try:
        with _open(path, "r") as f:
            n = 0
            while line := f.readline(max_bytes + 1):
                n += 1
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # the rest of the long line
                        line = f.readline(1 << 16)
                    yield n, None
                elif line.strip():
                    yield n, line
    except FileNotFoundError:
        raise LogError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise LogError(f"{path}: cannot read: {_os_reason(exc)}") from None


def _os_reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__


def _too_long(max_bytes: int) -> str:
    return f"line longer than the limit of {size_text(max_bytes)}"


def iter_ndjson(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(entry id, payload)`` for each line of an export, in order (``.gz`` by suffix).

    ``LogError("FILE:LINE: ...")`` for a line that is not an export line or is longer than
    ``MAX_LINE_BYTES``.
    """
    for n, line in numbered_lines(path):
        if line is None:
            raise LogError(f"{path}:{n}: {_too_long(MAX_LINE_BYTES)}")
        try:
            yield parse_line(line)
        except LogError as exc:
            raise LogError(f"{path}:{n}: {exc}") from None


_CHUNK = 1 << 16
"""Bytes read per step by ``iter_ndjson_batches`` (whole lines of it are decoded in one call).
64 KiB (about 250 entries): the decoded events are still in the CPU cache when they are applied
(the measurement against larger reads is in ``docs/performance.md``)."""

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
    decoding ``iter_ndjson``. Undecodable entries are passed to ``on_bad`` (or skipped), and so
    is a line longer than ``MAX_LINE_BYTES`` (reason ``too_large``, the detail names the file
    and line; it is never read whole). Lists may be empty (a chunk of bad lines); their sizes
    follow the chunking, not a count.
    """
    with _open(path, "r") as f:
        # read into one buffer: the partial line a read ends with moves to its front (no
        # ``tail + chunk`` copy), and whole lines are decoded from a view of it (no slice copy)
        size = _CHUNK
        buf = bytearray(size)
        view = memoryview(buf)
        held = 0  # bytes of a partial line at the front of ``buf``
        consumed = 0  # bytes of the file before ``buf``: a line's number is counted only when needed
        decode_lines = _event_line_decoder.decode_lines
        while True:
            if held == size:  # a line longer than the buffer
                if size > MAX_LINE_BYTES:
                    consumed += _drop_long_line(path, f, bytes(buf[:256]), consumed, on_bad)
                    held = 0
                    continue
                size = min(size * 2, MAX_LINE_BYTES + 1)
                view.release()
                grown = bytearray(size)
                grown[:held] = buf
                buf, view = grown, memoryview(grown)
            n = f.readinto(view[held:])
            if not n:
                if held:
                    yield _slow_chunk(path, bytes(buf[:held]), on_bad)
                return
            end = held + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:
                held = end
                continue
            body = view[:cut]
            try:
                lines = decode_lines(body)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                lines = None
            if lines is not None:
                pairs = current_pairs(lines, _ONE_VERSION) if _ONE_VERSION is not None else None
                if pairs is None and _ONE_VERSION is None and _all_current(lines):
                    pairs = [(ln.id, ln.e) for ln in lines]
            else:
                pairs = None
            if pairs is None:
                pairs = _slow_chunk(path, bytes(body), on_bad)
            body.release()
            held = end - cut
            consumed += cut
            buf[:held] = buf[cut:end]  # same length: a move, never a resize
            yield pairs


def _slow_chunk(path: Path, chunk: bytes, on_bad: Callable[[str, bytes, DecodeError], None] | None
                ) -> list[tuple[str, Event]]:
    try:
        return list(_slow_lines(chunk.splitlines(keepends=True), on_bad))
    except LogError as exc:  # a line that is not an export line at all
        raise LogError(f"{path}: {exc}") from None


def _drop_long_line(path: Path, f: io.BufferedIOBase, head: bytes, consumed: int,
                    on_bad: Callable[[str, bytes, DecodeError], None] | None) -> int:
    """Report the too-long line that starts ``consumed`` bytes into the file (``head`` is its
    start) to ``on_bad`` and read past its end; returns the bytes it took past ``consumed``."""
    taken = MAX_LINE_BYTES + 1
    while part := f.readline(1 << 16):
        taken += len(part)
        if part.endswith(b"\n"):
            break
    if on_bad is not None:
        end = head.find(b'"', 7)
        entry_id = head[7:end].decode(errors="replace") if head.startswith(_PREFIX) and end > 0 else ""
        line = _line_number(path, consumed)
        on_bad(entry_id, head, DecodeError("too_large", f"{path}:{line}: {_too_long(MAX_LINE_BYTES)}"))
    return taken


def _line_number(path: Path, offset: int) -> int:
    """The number of the line that starts ``offset`` bytes into the file (read again: rare)."""
    newlines = 0
    with _open(path, "r") as f:
        while offset > 0 and (block := f.read(min(offset, 1 << 20))):
            newlines += block.count(b"\n")
            offset -= len(block)
    return newlines + 1


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
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            if not line.strip():
                continue
        entry_id, payload = parse_line(line)
        try:
            yield LogEntry(entry_id, decode(payload))
        except DecodeError as exc:
            if on_bad is not None:
                on_bad(entry_id, payload, exc)
