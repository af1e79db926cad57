"""Verify: re-derive every decision and compare it with what was recorded live.

Two sides, keyed by intent id (``liq:<account>/<bucket>@<trigger entry id>``):

- *derived*: the ``LiquidationIntended`` entries the core returns during the replay;
- *recorded*: the ``LiquidationIntended`` entries found in the log.

A decision agrees when both sides have it and its ``Decision`` encodes to the same JSON bytes (or
the recorded one is the derived live one withheld by the daemon on prices old by the wall clock:
``withheld_as``).
Everything else is a divergence: ``mismatch`` (both sides, different bytes),
``derived_not_recorded`` or ``recorded_not_derived``. Divergences are ordered by log position
(the trigger entry id, then the intent id), so the *first* divergence is the earliest place where
this keeper would have acted differently.

When the replay stops early (``--to``/``--until``), the entries past the stop are scanned for
intents recorded for triggers at or before it (``after_stop``): a core appends the intents of a
batch together, after the batch, so once each core of the run has recorded an intent decided
past the stop (``LateScan``), none of its intents for earlier triggers can follow; without one,
the scan goes on to the log's end (a lagging projector can record an intent any number of
entries after its trigger). When the replay starts from a snapshot, recorded intents whose trigger
is at or before the snapshot's offset were decided before the replay began and are left out of
the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from keeper.domain.events import Decision, Event, LiquidationIntended
from keeper.replay.route import recorded
from keeper.store.entries import parse_id

__all__ = [
    "DERIVED_ONLY",
    "MISMATCH",
    "RECORDED_ONLY",
    "Divergence",
    "LateScan",
    "Verifier",
    "VerifyReport",
    "decision_bytes",
    "withheld_as",
]

_encoder = msgspec.json.Encoder()


MISMATCH = "mismatch"
DERIVED_ONLY = "derived_not_recorded"
RECORDED_ONLY = "recorded_not_derived"


def decision_bytes(d: Decision) -> bytes:
    """The canonical JSON of a decision: what 'byte-identical' is measured on."""
    return _encoder.encode(d)


@dataclass(frozen=True)
class Divergence:
    """One decision on which the replay and the recording disagree."""

    kind: str
    intent_id: str
    position: str
    """The trigger's log entry id: where the decision was (or would have been) made."""
    recorded_at: str | None
    """The log entry id of the recorded intent, when there is one."""
    derived: bytes | None
    recorded: bytes | None

    def sort_key(self) -> tuple[tuple[int, int], str]:
        return parse_id(self.position), self.intent_id

    def describe(self) -> str:
        """Both sides, human-readable, for the terminal."""
        where = f"at log position {self.position}"
        if self.recorded_at is not None:
            where += f" (recorded at {self.recorded_at})"
        lines = [f"first divergence: {self.kind} {self.intent_id} {where}"]
        lines.append(f"  recorded: {self.recorded.decode() if self.recorded is not None else '(none)'}")
        lines.append(f"  derived:  {self.derived.decode() if self.derived is not None else '(none)'}")
        if self.derived is not None and self.recorded is not None:
            a = msgspec.json.decode(self.recorded)
            b = msgspec.json.decode(self.derived)
            diff = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
            lines.append(f"  fields that differ: {', '.join(diff)}")
            for k in diff:
                lines.append(f"    {k}: recorded {a.get(k)!r} derived {b.get(k)!r}")
        return "\n".join(lines)


@dataclass
class VerifyReport:
    """The outcome: how many decisions were compared and every divergence, in log order."""

    decisions: int = 0
    agreed: int = 0
    withheld: int = 0
    """Agreeing decisions the daemon recorded withheld (``keeper.app.freshness``): derived live,
    recorded with ``mode = "withheld"``, the same otherwise."""
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.divergences

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def summary(self) -> str:
        """The last line a verify prints."""
        return f"verify: {self.decisions} decisions, {len(self.divergences)} divergences"


class Verifier:
    """Collects both sides as a replay runs (``after`` hook) and compares them at ``finish``.

    Pass ``start`` (the offset the replay began after) to leave out intents decided earlier.
    """

    def __init__(self, start: str = "0-0") -> None:
        self.start = parse_id(start)
        self._derived: dict[str, tuple[str, bytes]] = {}
        self._recorded: dict[str, tuple[str, str, bytes]] = {}
        self._order: list[str] = []

    def after(self, entry_id: str, event: Event, derived: Sequence[Event]) -> None:
        """Replay hook: note what the core derived after ``entry_id`` and any recorded intent."""
        for e in derived:
            if type(e) is LiquidationIntended:
                assert isinstance(e, LiquidationIntended)
                iid = e.decision.intent_id
                if iid not in self._derived:
                    self._derived[iid] = (entry_id, decision_bytes(e.decision))
        if type(event) is LiquidationIntended:
            assert isinstance(event, LiquidationIntended)
            d = event.decision
            if parse_id(d.trigger) <= self.start:
                return
            if d.intent_id not in self._recorded:
                self._recorded[d.intent_id] = (d.trigger, entry_id, decision_bytes(d))

    def after_batch(self, batch: Sequence[tuple[str, Event]], derived: Sequence[Event]) -> None:
        """Batch replay hook (``core.handle_batch``): the same as ``after`` on every entry, the
        derived decisions placed at their trigger (the entry they were decided after)."""
        for e in derived:
            if type(e) is LiquidationIntended:
                assert isinstance(e, LiquidationIntended)
                iid = e.decision.intent_id
                if iid not in self._derived:
                    self._derived[iid] = (e.decision.trigger, decision_bytes(e.decision))
        for entry_id, event in recorded(batch):
            self.after(entry_id, event, ())

    def after_stop(self, entry_id: str, event: Event, stop: str) -> None:
        """Past the stop position of a replay (``--to``/``--until``): note only the recorded
        intents decided at or before ``stop`` (the projector appends them after its batch, so
        they can sit a little past the trigger), so they are not reported as missing."""
        if type(event) is LiquidationIntended:
            assert isinstance(event, LiquidationIntended)
            if parse_id(event.decision.trigger) <= parse_id(stop):
                self.after(entry_id, event, ())

    def late_scan(self, stop: str, profiles: Sequence[str]) -> LateScan:
        """Where to stop scanning past ``stop`` (see the module docstring)."""
        return LateScan(self, stop, set(profiles))

    def absorb(self, other: Verifier) -> None:
        """Take in what ``other`` collected (a parallel replay's worker: its accounts only, so
        the two never hold the same intent)."""
        for iid, der in other._derived.items():
            self._derived.setdefault(iid, der)
        for iid, rec in other._recorded.items():
            if parse_id(rec[0]) > self.start:
                self._recorded.setdefault(iid, rec)

    def finish(self) -> VerifyReport:
        """Compare the two sides; divergences sorted by log position."""
        report = VerifyReport()
        ids = self._derived.keys() | self._recorded.keys()
        report.decisions = len(ids)
        out: list[Divergence] = []
        for iid in ids:
            der = self._derived.get(iid)
            rec = self._recorded.get(iid)
            if der is not None and rec is not None:
                if der[1] == rec[2]:
                    report.agreed += 1
                elif withheld_as(der[1], rec[2]):
                    report.agreed += 1
                    report.withheld += 1
                else:
                    out.append(Divergence(MISMATCH, iid, rec[0], rec[1], der[1], rec[2]))
            elif der is not None:
                out.append(Divergence(DERIVED_ONLY, iid, der[0], None, der[1], None))
            elif rec is not None:
                out.append(Divergence(RECORDED_ONLY, iid, rec[0], rec[1], None, rec[2]))
        out.sort(key=Divergence.sort_key)
        report.divergences = out
        return report


def withheld_as(derived: bytes, recorded: bytes) -> bool:
    """The recorded decision is the derived live one, withheld by the daemon because its prices
    were old by the wall clock (``keeper.app.freshness``): only its mode differs."""
    if b'"mode":"withheld"' not in recorded:
        return False
    a, b = msgspec.json.decode(recorded), msgspec.json.decode(derived)
    return bool(a.pop("mode") == "withheld" and b.pop("mode") == "live" and a == b)


class LateScan:
    """Feeds a verifier the entries past an early stop; ``take`` returns True while the intents of
    some core (by profile) for triggers at or before the stop may still follow."""

    def __init__(self, verifier: Verifier, stop: str, profiles: set[str]) -> None:
        self.verifier = verifier
        self.stop = stop
        self._stop = parse_id(stop)
        self.waiting = profiles
        self.scanned = 0

    def take(self, entry_id: str, event: Event) -> bool:
        self.scanned += 1
        if type(event) is LiquidationIntended:
            assert isinstance(event, LiquidationIntended)
            if parse_id(event.decision.trigger) <= self._stop:
                self.verifier.after(entry_id, event, ())
            else:
                self.waiting.discard(event.decision.profile)
        return bool(self.waiting)
