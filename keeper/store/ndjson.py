"""Export a log to NDJSON and import it back, byte-exact; fast iteration for replay.

One line per entry, in log order::

    {"id":"1700000000000-0","e":{...the event payload, verbatim...}}
    {"id":"1700000000001-0","b64":"...base64 of a payload that is not one-line JSON..."}

The payload is copied verbatim (not re-encoded), so ``import_log(export_log(log), bad="keep")``
recreates the same entry ids with the same payload bytes, bad entries included (those use
``b64``). A path ending in ``.gz`` is gzip-compressed.

Import checks the whole file before it writes anything: every line is an export line no longer
than ``keeper.jsonlimits.MAX_LINE_BYTES`` nor nested deeper than ``MAX_DEPTH``, its payload
decodes (``keeper.domain.codec.decode``), entry ids strictly increase, no event id appears twice.
The first problem is refused as ``LogError("FILE:LINE: why")`` and nothing is imported. Lines
that fail only because they are bad (too long, too deep, not an export line, a payload that
does not decode) may instead be sent to the dead-letter stream (``bad="skip"``), or, for a
payload that does not decode, imported verbatim (``bad="keep"``). Out-of-order ids and
duplicate event ids always refuse the file: it is not one log's export.

Import is resumable: it goes into an empty log, or into a log that holds exactly the start of
the same file (what an interrupted import left); the entries already there are compared byte for
byte and skipped, the rest appended. Any other log is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import itertools
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

import msgspec

from keeper.domain.codec import decode
from keeper.domain.events import EVENT_TYPES, AnyEvent, Event
from keeper.errors import DecodeError, LogError
from keeper.jsonlimits import MAX_DEPTH, MAX_LINE_BYTES, deeper_than, size_text
from keeper.ports import LogEntry
from keeper.store.entries import event_id_of
from keeper.store.lines import current_pairs

__all__ = [
    "IMPORT_SOURCE",
    "BadLines",
    "ImportSummary",
    "check_import",
    "export_lines",
    "export_log",
    "import_log",
    "import_ndjson",
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


class _Importable(_Readable, Protocol):
    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int: ...

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool: ...


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


BadLines = Literal["refuse", "skip", "keep"]
"""What ``import_log`` does with a bad line: ``refuse`` the file (the default); ``skip`` it, to
the dead-letter stream (source ``import``), importing the rest; ``keep`` a line whose payload does
not decode, imported verbatim as the exported log held it (readers dead-letter it as they did in
the source: the byte-exact restore), still refusing lines that are not export lines."""

IMPORT_SOURCE = "import"
"""The ``source`` of dead letters made by ``import_log(bad="skip")``."""

_ENTRY_ID = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
"""An entry id as Redis writes it (``ms-seq``, no leading zeros): another spelling would be
stored under Redis' own, and a resumed import would not recognise it."""
_U64 = 1 << 64
_SKIP_HINT = "--skip-bad imports the other lines and dead-letters this one"


@dataclass(frozen=True, slots=True)
class _Good:
    """A line to import (``decoded``: its payload is a valid event)."""

    line: int
    entry_id: str
    key: tuple[int, int]
    payload: bytes
    event_id: str
    decoded: bool


@dataclass(frozen=True, slots=True)
class _Bad:
    """A line that cannot be imported: ``reason`` is a code, ``entry_id`` ``""`` when unreadable."""

    line: int
    entry_id: str
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What ``import_ndjson`` did. ``present``: entries already in the log (an interrupted import
    of the same file, skipped); ``dead_lettered``: bad lines sent to the dead-letter stream;
    ``kept``: undecodable payloads imported verbatim (``bad="keep"``, counted in ``imported``)."""

    imported: int
    present: int
    dead_lettered: int
    kept: int


def _entry_key(entry_id: str) -> tuple[int, int] | None:
    m = _ENTRY_ID.fullmatch(entry_id)
    if m is None:
        return None
    key = (int(m[1]), int(m[2]))
    return key if key != (0, 0) and key[0] < _U64 and key[1] < _U64 else None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _judge(n: int, line: bytes | None, bad: BadLines) -> _Good | _Bad:
    """Line ``n`` of an export (``None``: too long), judged for import; no I/O."""
    if line is None:
        return _Bad(n, "", "too_large", _too_long(MAX_LINE_BYTES), b"")
    if deeper_than(line, MAX_DEPTH):
        return _Bad(n, "", "too_deep", f"nested deeper than the limit of {MAX_DEPTH} levels",
                    line[:1024])
    try:
        entry_id, payload = parse_line(line)
    except LogError as exc:
        return _Bad(n, "", "bad_line", str(exc), line.rstrip(b"\r\n"))
    key = _entry_key(entry_id)
    if key is None:
        return _Bad(n, "", "bad_line", f"{entry_id[:40]!r} is not an entry id (ms-seq, above 0-0)",
                    line.rstrip(b"\r\n"))
    try:
        return _Good(n, entry_id, key, payload, decode(payload).event_id, True)
    except DecodeError as exc:
        if bad == "keep":
            return _Good(n, entry_id, key, payload, event_id_of(payload), False)
        return _Bad(n, entry_id, exc.reason, exc.detail, payload)


def _judged(path: Path, bad: BadLines) -> Iterator[_Good | _Bad]:
    for n, line in numbered_lines(path):
        yield _judge(n, line, bad)


def _refuse(path: Path, item: _Bad) -> LogError:
    # an entry id: the line was read, only its payload does not decode (keep can import it)
    hint = _SKIP_HINT + ("; --keep-bad imports it verbatim" if item.entry_id else "")
    return LogError(f"{path}:{item.line}: {item.reason}: {_one_line(item.detail)}; nothing "
                    f"imported ({hint})")


def check_import(path: Path, bad: BadLines = "refuse") -> int:
    """Check a whole export before anything is written (see the module docstring); return how
    many entries it holds to import. ``LogError("PATH:LINE: why; nothing imported")`` for the
    first problem; with ``bad="skip"`` bad lines pass (``import_ndjson`` dead-letters them)."""
    prev: _Good | None = None
    first_line: dict[str, int] = {}
    count = 0
    for item in _judged(path, bad):
        if isinstance(item, _Bad):
            if bad == "skip":
                continue
            raise _refuse(path, item)
        if prev is not None and item.key <= prev.key:
            raise LogError(f"{path}:{item.line}: entry id {item.entry_id} is not above "
                           f"{prev.entry_id} of line {prev.line} (entry ids must increase); "
                           "nothing imported")
        if item.event_id:
            seen = first_line.setdefault(item.event_id, item.line)
            if seen != item.line:
                raise LogError(f"{path}:{item.line}: event id {item.event_id!r} is also on line "
                               f"{seen}; nothing imported")
        prev = item
        count += 1
    return count


def _not_this_file(path: Path, entry_id: str, item: _Good | None) -> LogError:
    where = ("is not in it" if item is None
             else f"is not line {item.line} ({item.entry_id}) byte for byte")
    return LogError(f"{path}: the log is not empty and its entry {entry_id} {where}: import into "
                    "an empty log, or into the one an interrupted import of this file left; "
                    "nothing imported")


async def _skip_present(log: _Importable, path: Path, items: Iterator[_Good | _Bad]
                        ) -> tuple[int, list[_Bad]]:
    """Read the log from its start alongside the file: each entry must be the file's next one
    (same id, same payload bytes), else ``LogError``. Returns how many there were, and the bad
    lines read since the last of them (an interrupted run may not have dead-lettered those)."""
    present = 0
    since: list[_Bad] = []
    after = "0-0"
    while raw := await log.read_raw(after, _BATCH):
        for entry_id, payload in raw:
            item = next(items, None)
            while isinstance(item, _Bad):
                since.append(item)
                item = next(items, None)
            if item is None or item.entry_id != entry_id or item.payload != payload:
                raise _not_this_file(path, entry_id, item)
            since.clear()
            present += 1
        after = raw[-1][0]
    return present, since


async def _dead_letter(log: _Importable, path: Path, item: _Bad) -> int:
    # ref: the line once, however often an interrupted import is resumed (by its number and
    # content; "import:" keeps it apart from the entry ids the read path dead-letters under)
    digest = hashlib.blake2b(item.payload, digest_size=8).hexdigest()
    ref = f"{IMPORT_SOURCE}:{item.line}:{digest}"
    added = await log.dead_letter(IMPORT_SOURCE, item.reason,
                                  f"{path}:{item.line}: {_one_line(item.detail)}", item.payload,
                                  ref=ref)
    return int(added)


async def import_ndjson(log: _Importable, path: Path, bad: BadLines = "refuse") -> ImportSummary:
    """Import an export into ``log`` with its entry ids: nothing when the file has a problem
    (``check_import``); after the entries an interrupted import of the same file left when the
    log holds them (compared byte for byte, skipped). ``LogError`` names the file and line, or
    says why the log cannot take the file; nothing is written before the checks pass."""
    check_import(path, bad)
    items = _judged(path, bad)
    present, since = await _skip_present(log, path, items)
    dead = kept = imported = 0
    batch: list[tuple[str, bytes]] = []
    for item in itertools.chain(since, items):
        if isinstance(item, _Bad):
            if bad != "skip":  # the file changed since it was checked
                raise _refuse(path, item)
            if batch:  # written before the dead letter: a resumed import starts after both
                imported += await log.import_entries(batch)
                batch = []
            dead += await _dead_letter(log, path, item)
            continue
        batch.append((item.entry_id, item.payload))
        kept += not item.decoded
        if len(batch) >= _BATCH:
            imported += await log.import_entries(batch)
            batch = []
    if batch:
        imported += await log.import_entries(batch)
    return ImportSummary(imported, present, dead, kept)


async def import_log(log: _Importable, path: Path, bad: BadLines = "refuse") -> int:
    """``import_ndjson``, returning how many entries it appended."""
    return (await import_ndjson(log, path, bad)).imported


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
