"""What a retention pass keeps and what it reports: ``RetentionPolicy`` (the ``[retention]``
config), the readers' ``Pin``s, the ``PassReport``, and the log positions (``Pos``: an entry id as
``(ms, seq)``) a pass computes with. The pass itself is ``keeper.store.retention``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from keeper.store.entries import event_id_of, parse_id

__all__ = ["CAP_MIN", "PassReport", "Pin", "Pos", "RetentionPolicy", "below", "event_ids_aligned",
           "event_ids_of", "fmt", "succ"]

CAP_MIN = 10_000
"""The smallest hard cap (``RetentionPolicy.cap_entries``): well above a reader's batch."""

Pos = tuple[int, int]
"""A log position: an entry id as ``(ms, seq)``."""


def succ(p: Pos) -> Pos:
    """The position right after ``p`` (as a MINID: everything up to ``p`` goes)."""
    return p[0], p[1] + 1


def fmt(p: Pos) -> str:
    """``p`` as an entry id (``ms-seq``)."""
    return f"{p[0]}-{p[1]}"


def below(raw: list[tuple[str, bytes]], point: Pos) -> list[tuple[str, bytes]]:
    """The entries of ``raw`` (in log order) with an id below ``point``."""
    if not raw or parse_id(raw[-1][0]) < point:
        return raw
    return [e for e in raw if parse_id(e[0]) < point]


class _IdOnly(msgspec.Struct):
    event_id: str = ""


_id_lines = msgspec.json.Decoder(_IdOnly)


def event_ids_of(payloads: list[bytes]) -> list[str]:
    """The event ids of payloads (one decode call for a whole batch of well-formed ones)."""
    return [i for i in event_ids_aligned(payloads) if i]


def event_ids_aligned(payloads: list[bytes]) -> list[str]:
    """The event id of each payload, ``""`` for one without (aligned with ``payloads``)."""
    if not any(b"\n" in p or b"\r" in p for p in payloads):
        try:
            got = [i.event_id for i in _id_lines.decode_lines(b"\n".join(payloads))]
            if len(got) == len(payloads):
                return got
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
    return list(map(event_id_of, payloads))


@dataclass(frozen=True)
class RetentionPolicy:
    """What a pass keeps (``[retention]`` in the config, ``keeper.app.config``)."""

    archive_dir: Path
    hot_window_s: float = 3600.0
    max_entries: int = 0
    dedup_window_s: float = 86_400.0
    interval_s: float = 60.0
    dead_max_entries: int = 100_000
    segment_entries: int = 1_000_000
    min_segment_entries: int = 10_000
    trim: bool = True
    """False: archive only (no trimming, the dedup index and dead letters left as they are)."""
    cap_entries: int = 0
    """The hot log's hard cap (0: none): beyond it the oldest entries are trimmed even past a
    projector's snapshot, never past a consumer group or the archive. A projector that far behind
    must read through ``ArchivedLog`` (the daemon's do when a cap is set). At least
    ``CAP_MIN`` when set, and not below ``max_entries``."""

    def __post_init__(self) -> None:
        if self.cap_entries and (self.cap_entries < CAP_MIN or self.cap_entries < self.max_entries):
            raise ValueError(f"retention cap_entries = {self.cap_entries}: 0 (no cap) or at least "
                             f"{max(CAP_MIN, self.max_entries):,} (CAP_MIN and max_entries)")

    @classmethod
    def from_config(cls, section: Any, *, state_dir: str | Path = ".keeper") -> RetentionPolicy:
        """From ``Config.retention`` (``archive_dir`` empty: ``<state_dir>/archive``)."""
        root = Path(section.archive_dir) if section.archive_dir else Path(state_dir) / "archive"
        return cls(archive_dir=root, hot_window_s=section.hot_window_s,
                   max_entries=section.max_entries, dedup_window_s=section.dedup_window_s,
                   interval_s=section.interval_s, dead_max_entries=section.dead_max_entries,
                   segment_entries=section.segment_entries,
                   min_segment_entries=section.min_segment_entries,
                   cap_entries=section.cap_entries)


@dataclass
class Pin:
    """A reader's need: entries from ``bound`` on stay (a MINID)."""

    name: str
    bound: Pos
    snapshot: bool = False
    """A projector's snapshot: it holds trimming back down to the hard cap only."""

    def __str__(self) -> str:
        return f"{self.name} (keeps {fmt(self.bound)} on)"


@dataclass
class PassReport:
    """What one pass did; ``keeper log archive`` prints it, the daemon turns it into metrics."""

    started_ms: int = 0
    duration_s: float = 0.0
    skipped: str = ""
    error: str = ""
    archived: int = 0
    segments: list[str] = field(default_factory=list)
    archived_to: str = "0-0"
    archive_entries: int = 0
    trim_point: str = "0-0"
    limited_by: str = ""
    lagging: list[str] = field(default_factory=list)
    overrun: list[str] = field(default_factory=list)
    """Snapshot pins the hard cap trimmed past (those projectors read from the archive)."""
    trimmed: int = 0
    trimmed_to: str = "0-0"
    hot_entries: int = 0
    hot_first: str = ""
    ids_expired: int = 0
    ids_expired_to: str = "0-0"
    ids_size: int = 0
    marks: dict[str, int] = field(default_factory=dict)
    dead_trimmed: int = 0
    deadrefs_removed: int = 0
    used_memory: int = 0

    def absorb(self, later: PassReport) -> None:
        """Add a later round of the same pass: counts add up, pins lagging or overrun in any
        round are listed, the state is the later round's (what limited the trim: the last round
        that trimmed anything)."""
        for name in ("archived", "trimmed", "ids_expired", "dead_trimmed", "deadrefs_removed"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        self.segments += later.segments
        self.marks.update(later.marks)
        self.lagging += [pin for pin in later.lagging if pin not in self.lagging]
        self.overrun += [pin for pin in later.overrun if pin not in self.overrun]
        for name in ("archived_to", "archive_entries", "trimmed_to", "hot_entries", "hot_first",
                     "ids_expired_to", "ids_size", "used_memory", "error"):
            setattr(self, name, getattr(later, name))
        if later.trimmed or not self.limited_by:
            self.trim_point, self.limited_by = later.trim_point, later.limited_by

    def summary(self) -> str:
        """One line for humans."""
        if self.skipped:
            return f"retention: skipped ({self.skipped})"
        text = (f"retention: archived {self.archived} entries in {len(self.segments)} segments "
                f"(archive holds {self.archive_entries} up to {self.archived_to}); trimmed "
                f"{self.trimmed} below {self.trimmed_to} (limited by {self.limited_by or '-'}); hot "
                f"log {self.hot_entries} entries from {self.hot_first or '-'}; dedup index "
                f"{self.ids_size} ids ({self.ids_expired} expired up to {self.ids_expired_to}); "
                f"dead letters trimmed {self.dead_trimmed}; used_memory {self.used_memory} bytes; "
                f"{self.duration_s:.2f} s")
        if self.lagging:
            text += "; lagging: " + ", ".join(self.lagging)
        if self.overrun:
            text += "; past the hard cap: " + ", ".join(self.overrun)
        if self.error:
            text += f"; error: {self.error}"
        return text

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
