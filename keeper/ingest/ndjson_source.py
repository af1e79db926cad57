"""An NDJSON file as a source of events (a log export, or a recorded venue history).

Each line is ``{"id": "<entry id>", "e": {event}}`` (keeper's log export), ``{"id": ...,
"b64": "..."}`` (an export of a payload that was not one-line JSON) or a bare event object.
Events keep their own ``event_id``, so loading the same file twice appends nothing the second
time. A line that does not decode becomes a ``Reject`` (reason from the codec, or
``bad_line``) with the line as payload, a line longer than ``keeper.jsonlimits.MAX_LINE_BYTES``
one with reason ``too_large`` (never read whole); blank lines are skipped. ``.gz`` files are
read through gzip; a file that cannot be read is a ``LogError`` naming it.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec

from keeper.domain.codec import decode
from keeper.domain.events import Event
from keeper.errors import DecodeError
from keeper.feeds.ingest import Ingest
from keeper.feeds.pipeline import Reject
from keeper.jsonlimits import MAX_LINE_BYTES, size_text
from keeper.store.ndjson import numbered_lines

__all__ = ["load_ndjson", "read_ndjson"]


class _Line(msgspec.Struct):
    id: str | None = None
    e: msgspec.Raw = msgspec.Raw()  # msgspec cannot decode ``Raw | None``: empty means absent
    b64: str | None = None


_line = msgspec.json.Decoder(_Line)


def _payload(line: bytes) -> bytes:
    if not line.startswith(b'{"id"'):
        return line
    try:
        parsed = _line.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # deep: the codec says
        return line
    if len(parsed.e):
        return bytes(parsed.e)
    if parsed.b64 is not None:
        try:
            return base64.b64decode(parsed.b64, validate=True)
        except (binascii.Error, ValueError):
            return line
    return line


def read_ndjson(path: str | Path, source: str | None = None) -> Iterator[Event | Reject]:
    """Events (or rejects) of the file's lines, in file order."""
    p = Path(path)
    name = source or f"ndjson:{p.name}"
    for n, raw_line in numbered_lines(p):
        if raw_line is None:  # never read whole: ``keeper.jsonlimits.MAX_LINE_BYTES``
            yield Reject(name, "too_large", f"line {n}: longer than {size_text(MAX_LINE_BYTES)}", b"")
            continue
        line = raw_line.strip()
        try:
            yield decode(_payload(line))
        except DecodeError as exc:
            yield Reject(name, exc.reason, f"line {n}: {exc.detail}"[:300], line)


async def load_ndjson(path: str | Path, ingest: Ingest, *, batch: int = 1000,
                      source: str | None = None) -> Counter[str]:
    """Queue the file's events into ``ingest`` (in order, in batches); count events and rejects."""
    counts: Counter[str] = Counter()
    events: list[Event] = []
    for item in read_ndjson(path, source):
        if isinstance(item, Reject):
            counts["rejected"] += 1
            await ingest.submit_rejects([item])
            continue
        events.append(item)
        counts["events"] += 1
        if len(events) >= batch:
            await ingest.submit(events)
            events = []
    if events:
        await ingest.submit(events)
    return counts
