"""The event ids of entries retention has archived whose dedup window has not ended yet.

Retention reads every entry it archives; it keeps their event ids here, in its own process, so
that expiring them from the dedup index when their window ends (``Retention._dedup``) does not
read them back out of the compressed archive. The archive stays the source of truth and the
fallback: after a restart (nothing held), for entries this process never read, and past
``max_held`` entries (the oldest are let go first).

Contract:

- ``add(after, raw)`` takes entries in log order, right after entry ``after``. The held entries
  are always one contiguous run of the log, ``(start, end]``: entries that do not follow ``end``
  start a new run (what was held is let go).
- ``drop_through(pos)`` lets go of the held entries up to ``pos``; ``take_below(cut, budget)``
  pops the held entries whose id is below ``cut`` (at most about ``budget``), oldest first.
- Memory: about 40 bytes an entry (two int64 and the event id), in batches as they were read.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from keeper.store.entries import parse_id
from keeper.store.retention_policy import Pos, event_ids_aligned

__all__ = ["MAX_HELD", "RecentIds"]

MAX_HELD = 1_000_000
"""Entries held at most (about 40 MB): a 20 s dedup window at 50,000 events/s; longer windows
read the older part back from the archive."""


@dataclass
class _Batch:
    ms: np.ndarray  # int64: the entries' id times
    seq: np.ndarray  # int64: the entries' id sequence numbers
    ids: list[bytes]  # aligned with the entries: b"" for an entry without an event id

    def __len__(self) -> int:
        return len(self.ids)

    def last(self) -> str:
        return f"{int(self.ms[-1])}-{int(self.seq[-1])}"

    def at(self, i: int) -> Pos:
        return int(self.ms[i]), int(self.seq[i])

    def split(self, k: int) -> _Batch:
        """Remove and return the first ``k`` entries."""
        head = _Batch(self.ms[:k], self.seq[:k], self.ids[:k])
        self.ms, self.seq, self.ids = self.ms[k:], self.seq[k:], self.ids[k:]
        return head


class RecentIds:
    """See the module docstring."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self.max_held = max_held
        self.start: str | None = None
        """The entry the held run follows (None: nothing held)."""
        self.end: str | None = None
        self.held = 0
        self._batches: deque[_Batch] = deque()

    def clear(self) -> None:
        self._batches.clear()
        self.start = self.end = None
        self.held = 0

    def add(self, after: str, raw: list[tuple[str, bytes]]) -> None:
        """Hold the entries ``raw``, which follow entry ``after`` in the log. Entries read
        again (``after`` before the held run's end: a pass re-reading what the last one did not
        archive) are held once."""
        if self.end is not None and parse_id(after) < (end := parse_id(self.end)):
            raw = [e for e in raw if parse_id(e[0]) > end]  # what follows the held run, if any
            after = self.end
        if not raw:
            return
        if self.end is None or parse_id(self.end) != parse_id(after):
            self.clear()
            self.start = after
        pos = [parse_id(i) for i, _ in raw]
        ids = [i.encode() for i in event_ids_aligned([p for _, p in raw])]
        batch = _Batch(np.fromiter((m for m, _ in pos), np.int64, len(pos)),
                       np.fromiter((s for _, s in pos), np.int64, len(pos)), ids)
        self._batches.append(batch)
        self.held += len(batch)
        self.end = raw[-1][0]
        while self.held > self.max_held and self._batches:
            old = self._batches.popleft()
            self.held -= len(old)
            self.start = old.last()
        if not self._batches:
            self.clear()

    def drop_through(self, pos: str) -> None:
        """Let go of the held entries up to ``pos`` (those are expired already)."""
        if self.start is None or self.end is None:
            return
        p = parse_id(pos)
        if p <= parse_id(self.start):
            return
        if p >= parse_id(self.end):
            self.clear()
            return
        while self._batches and parse_id(self._batches[0].last()) <= p:
            self.held -= len(self._batches.popleft())
        if self._batches:
            b = self._batches[0]
            k = _count_below(b, (p[0], p[1] + 1))
            self.held -= len(b.split(k))
        self.start = pos

    def take_below(self, cut: Pos, budget: int) -> tuple[list[str], str, int]:
        """Pop the held entries below ``cut`` (whole batches while within ``budget``): their
        event ids, the last popped entry's id (``""``: none) and how many entries."""
        out: list[str] = []
        last = ""
        n = 0
        while self._batches and n < budget:
            b = self._batches[0]
            k = _count_below(b, cut)
            if k == 0:
                break
            whole = k == len(b)
            head = self._batches.popleft() if whole else b.split(k)
            out += [i.decode() for i in head.ids if i]
            last = head.last()
            n += len(head)
            if not whole:
                break
        if n:
            self.held -= n
            self.start = last
            if not self._batches:
                self.clear()
        return out, last, n


def _count_below(b: _Batch, cut: Pos) -> int:
    """How many of the batch's entries (in id order) have an id below ``cut``."""
    k = int(np.searchsorted(b.ms, cut[0], side="left"))  # entries of an earlier millisecond
    while k < len(b) and int(b.ms[k]) == cut[0] and int(b.seq[k]) < cut[1]:
        k += 1
    return k

