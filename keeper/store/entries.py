"""What every log backend shares: entry-id arithmetic and the decode-or-dead-letter split.

No Redis import here, so ``keeper.testing`` (the in-memory twin) stays importable without it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from keeper.domain.codec import decode
from keeper.errors import DecodeError
from keeper.jsonlimits import deeper_than
from keeper.ports import LogEntry

__all__ = ["READ_SOURCE", "event_id_of", "format_id", "parse_id", "split_decoded"]

READ_SOURCE = "log.read"
"""The ``source`` of dead letters produced by reading the log."""


class _IdOnly(msgspec.Struct):
    event_id: str


_id_decoder = msgspec.json.Decoder(_IdOnly)


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"ms-seq"`` -> ``(ms, seq)``; a bare ``"ms"`` means ``(ms, 0)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def event_id_of(payload: bytes) -> str:
    """The ``event_id`` of a payload, or ``""`` when it has none (a payload that is not an event)."""
    if deeper_than(payload):  # skipping the other fields recurses: never that deep
        return ""
    try:
        return _id_decoder.decode(payload).event_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ""


def split_decoded(raw: Iterable[tuple[str, bytes]]
                  ) -> tuple[list[LogEntry], list[tuple[str, bytes, DecodeError]]]:
    """Decode raw entries in order: the good ones, and the bad ones with their error."""
    good: list[LogEntry] = []
    bad: list[tuple[str, bytes, DecodeError]] = []
    for entry_id, payload in raw:
        try:
            good.append(LogEntry(entry_id, decode(payload)))
        except DecodeError as exc:
            bad.append((entry_id, payload, exc))
    return good, bad
