"""Import an NDJSON export (``keeper.store.ndjson``'s format) into a log, byte-exact.

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

import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from keeper.domain.codec import decode
from keeper.errors import DecodeError, LogError
from keeper.jsonlimits import MAX_DEPTH, MAX_LINE_BYTES, deeper_than, size_text
from keeper.store.entries import event_id_of
from keeper.store.ndjson import numbered_lines, parse_line

__all__ = ["IMPORT_SOURCE", "BadLines", "ImportSummary", "check_import", "import_log", "import_ndjson"]

_BATCH = 1000
"""Entries per read of the log (resuming) and per append."""
_TOO_LONG = f"line longer than the limit of {size_text(MAX_LINE_BYTES)}"


class _Importable(Protocol):
    async def read_raw(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                       ) -> list[tuple[str, bytes]]: ...

    async def import_entries(self, items: Sequence[tuple[str, bytes]]) -> int: ...

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool: ...


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
        return _Bad(n, "", "too_large", _TOO_LONG, b"")
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
