"""The ports: what the core needs from the outside world, as Protocols.

Each has a real adapter (Redis, aiohttp, websockets, the system clock) and an in-memory twin in
``keeper.testing``; live, replay and tests drive the same core through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from keeper.domain.events import Decision, Event

__all__ = ["Clock", "DeadLetter", "EventLog", "Executor", "LogEntry", "SnapshotStore"]


class LogEntry(NamedTuple):
    """One decoded log entry: its position (stream entry id, ``ms-seq``) and its event."""

    id: str
    event: Event


class DeadLetter(NamedTuple):
    """An entry that could not be accepted, kept with the reason."""

    id: str
    source: str
    reason: str
    detail: str
    payload: bytes


class EventLog(Protocol):
    """The append-only log. Entry ids are increasing ``ms-seq`` strings; their order is the order.

    Contract (``tests/contract/test_event_log.py`` runs it against every implementation):
    - ``append`` is atomic per call and drops events whose ``event_id`` is already in the log;
      it returns, per event, the new entry id or ``None`` for a duplicate.
    - ``read(after)`` returns decoded entries with id > ``after`` in log order, at most ``count``;
      an entry that cannot be decoded is moved to the dead-letter stream with its reason (and
      counted), never returned and never raised.
    """

    async def append(self, events: Sequence[Event]) -> list[str | None]: ...

    async def read(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                   ) -> list[LogEntry]: ...

    async def read_batch(self, after: str = "0-0", count: int = 1000, block_ms: int | None = None
                         ) -> tuple[list[LogEntry], str]:
        """Like ``read``, also returning the position to continue after (the last raw id seen,
        which moves past dead-lettered entries)."""
        ...

    async def last_id(self) -> str: ...

    async def length(self) -> int: ...

    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]: ...

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes,
                          ref: str = "") -> bool:
        """Keep a refused input with its reason; with ``ref`` (a log entry id) at most once.
        Returns whether it was added."""
        ...


class SnapshotStore(Protocol):
    """Where state snapshots live, each written together with the log offset it reflects."""

    async def save(self, name: str, offset: str, data: bytes) -> None: ...

    async def load(self, name: str) -> tuple[str, bytes] | None: ...


class Clock(Protocol):
    """Injected time: the system clock live, a replay clock driven by the log in replay."""

    def now_us(self) -> int: ...

    def monotonic(self) -> float: ...


class Executor(Protocol):
    """Submits one decided liquidation to a venue, idempotently under its intent id.

    Returns the venue's reference on acceptance; raises ``TransientError`` (retry under the same
    id) or ``PermanentError`` (the venue refused, with its reason). A duplicate submission of an
    intent the venue already accepted returns normally with ``duplicate=True``.
    """

    name: str

    async def submit(self, decision: Decision) -> tuple[str | None, bool]: ...

    async def close(self) -> None: ...
