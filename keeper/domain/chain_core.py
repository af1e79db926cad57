"""What every chain venue's keeper core shares: the ``Core`` protocol, outcomes, restraint, poison.

A chain venue's core (``keeper.domain.morpho.core.MorphoCore``, ``keeper.domain.aave_v3.core``)
folds its protocol's ``ChainLog`` entries into the protocol's own state and decides on
``ChainBlock`` frames only (the block's logs and readings all applied: one instant judged as a
whole). This base holds the rest, the same for every protocol:

- **Busy.** A position with an intent in flight is skipped until its outcome is in the log;
  after ``LiquidationConfirmed`` it stays skipped until a frame at or past the receipt's block
  (the contract's own event is then folded in). After a rejection it waits ``2**(n-1)`` blocks
  (n: rejections in a row, at most 64), so a market that refuses is not hammered.
- **Paper decisions** are recorded once per unhealthy episode, not at every block.
- **Order.** Several positions breaching on one frame are decided lowest health first, ties by
  bucket key (``account/bucket``).
- **Poison.** An entry the state cannot take (``KeeperError``, the protocol's state error,
  raised before anything changed; or anything else it raises) is counted in ``quarantined``
  with its reason, listed for the projector to dead-letter, and the core carries on, live and
  in replay alike.
- **Ids.** ``liq:<account>/<bucket>@<frame entry id>``, as every keeper core derives them.

A subclass sets ``VENUE`` (its default venue name), ``STATE`` (its state's msgspec type: the
snapshot encodes it as JSON) and ``FORMAT``, keeps its state in ``self.state``, and provides
``apply_log``, ``undo_log``, ``apply_block`` (the fold) and ``scan`` (every position with debt:
its key and, where liquidatable, its health and a way to build the decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple, Self

import msgspec

from keeper.domain import codec
from keeper.domain import events as ev
from keeper.domain.decide import bucket_of_intent, intent_id
from keeper.domain.params import KeeperParams

__all__ = ["Breach", "ChainCore"]

_MAX_HOLD_BLOCKS = 64


class Breach(NamedTuple):
    """A liquidatable position found on a frame: its bucket key, health, and the decision's
    builder (called only if the position is not held)."""

    key: str
    health: Fraction
    decide: Callable[[str], ev.Decision | None]
    """``intent id -> Decision`` (None: nothing the contract would accept after all)."""


class _Saved(msgspec.Struct, forbid_unknown_fields=True):
    state: msgspec.Raw
    offset: str
    applied: int
    busy: dict[str, str]
    settling: dict[str, int]
    rejected: dict[str, tuple[int, int]]
    pending: list[str]
    episodes: dict[str, str]
    quarantined: int
    last_quarantine: str


class ChainCore:
    """The ``Core`` of a chain venue (module docstring)."""

    FORMAT: ClassVar[int] = 0
    VENUE: ClassVar[str] = ""
    STATE: ClassVar[type[Any]]
    state: Any
    """The protocol's state (a ``STATE``; it has the ``block`` of its latest frame)."""

    def __init__(self, params: KeeperParams, venue: str | None = None) -> None:
        self.params = params
        self.venue = venue or self.VENUE
        self._offset = "0-0"
        self.applied = 0
        self.busy: dict[str, str] = {}
        """bucket key -> the intent in flight."""
        self.settling: dict[str, int] = {}
        """bucket key -> the receipt's block: skipped until a frame at or past it."""
        self.rejected: dict[str, tuple[int, int]] = {}
        """bucket key -> (rejections in a row, block of the last one)."""
        self._pending: dict[str, ev.LiquidationIntended] = {}
        """Intents decided but not yet seen in the log (re-appended after a restart)."""
        self.episodes: dict[str, str] = {}
        """bucket key -> the mode of the paper decision recorded in its unhealthy episode."""
        self.quarantined = 0
        self.last_quarantine = ""
        self._poison: list[tuple[str, ev.Event, str]] = []
        self.block = 0

    # ------------------------------------------------------------------ for subclasses

    def apply_log(self, e: ev.ChainLog) -> None:
        raise NotImplementedError

    def undo_log(self, e: ev.ChainLogRemoved) -> None:
        raise NotImplementedError

    def apply_block(self, e: ev.ChainBlock) -> None:
        raise NotImplementedError

    def scan(self, frame: ev.ChainBlock) -> Iterable[tuple[str, Breach | None]]:
        """Every position with debt: its key and a ``Breach`` where liquidatable (else None)."""
        raise NotImplementedError

    def state_bytes(self) -> bytes:
        return msgspec.json.encode(self.state)

    def load_state(self, data: bytes) -> None:
        self.state = msgspec.json.decode(data, type=self.STATE)
        self.block = self.state.block

    @classmethod
    def restore(cls, data: bytes, params: KeeperParams, venue: str | None = None) -> Self:
        """A core from its ``snapshot()`` bytes."""
        core = cls(params, venue)
        core._restore(data)
        return core

    # ------------------------------------------------------------------ the Core protocol

    @property
    def offset(self) -> str:
        return self._offset

    def pending(self) -> Sequence[ev.Event]:
        return list(self._pending.values())

    def handle(self, entry_id: str, event: ev.Event) -> Sequence[ev.Event]:
        """Apply one log entry; return the intents to record (only on a block frame)."""
        self._offset = entry_id
        self.applied += 1
        t = type(event)
        out: Sequence[ev.Event] = ()
        try:
            if t is ev.ChainLog:
                assert isinstance(event, ev.ChainLog)
                if event.venue == self.venue:
                    self.apply_log(event)
            elif t is ev.ChainLogRemoved:
                assert isinstance(event, ev.ChainLogRemoved)
                if event.venue == self.venue:
                    self.undo_log(event)
            elif t is ev.ChainBlock:
                assert isinstance(event, ev.ChainBlock)
                if event.venue == self.venue:
                    self.apply_block(event)
                    self.block = event.block
                    out = self._decide(entry_id, event)
            elif t is ev.LiquidationIntended:
                assert isinstance(event, ev.LiquidationIntended)
                self._intended(event)
            elif t in (ev.LiquidationConfirmed, ev.LiquidationRejected, ev.LiquidationExpired):
                assert isinstance(event, ev._Outcome)
                self._outcome(event)
        except Exception as exc:  # the boundary: one entry never stops the core
            self.quarantined += 1
            self.last_quarantine = f"{entry_id}: {exc}"
            self._poison.append((entry_id, event, f"{type(exc).__name__}: {exc}"))
        return out

    def take_quarantined(self) -> list[tuple[str, ev.Event, str]]:
        """The entries quarantined since the last call: ``(entry id, event, error)`` (the
        projector dead-letters them)."""
        out, self._poison = self._poison, []
        return out

    def snapshot(self) -> bytes:
        return msgspec.json.encode(_Saved(
            msgspec.Raw(self.state_bytes()), self._offset, self.applied, self.busy, self.settling,
            self.rejected, [codec.encode(i).decode() for i in self._pending.values()], self.episodes,
            self.quarantined, self.last_quarantine))

    def _restore(self, data: bytes) -> None:
        saved = msgspec.json.decode(data, type=_Saved)
        self.load_state(bytes(saved.state))
        self._offset, self.applied = saved.offset, saved.applied
        self.busy, self.settling, self.rejected = saved.busy, saved.settling, saved.rejected
        for raw in saved.pending:
            intent = codec.decode(raw)
            assert isinstance(intent, ev.LiquidationIntended)
            self._pending[intent.event_id] = intent
        self.episodes = saved.episodes
        self.quarantined, self.last_quarantine = saved.quarantined, saved.last_quarantine

    # ------------------------------------------------------------------ outcomes

    @property
    def mode(self) -> str:
        return "live" if self.params.mode == "live" else "paper"

    def _intended(self, e: ev.LiquidationIntended) -> None:
        self._pending.pop(e.event_id, None)
        d = e.decision
        if d.profile == self.params.profile and d.mode == "live":
            self.busy[f"{d.account}/{d.bucket}"] = d.intent_id

    def _outcome(self, e: ev._Outcome) -> None:
        key = bucket_of_intent(e.intent_id)
        if self.busy.get(key) != e.intent_id:
            return
        del self.busy[key]
        if isinstance(e, ev.LiquidationConfirmed):
            self.settling[key] = e.block if e.block is not None else self.block
            self.rejected.pop(key, None)
        elif isinstance(e, ev.LiquidationRejected):
            n, _ = self.rejected.get(key, (0, 0))
            self.rejected[key] = (n + 1, self.block)

    def _held(self, key: str) -> bool:
        if key in self.busy:
            return True
        settle = self.settling.get(key)
        if settle is not None:
            if self.block < settle:
                return True
            del self.settling[key]
        rej = self.rejected.get(key)
        if rej is not None:
            n, at = rej
            hold: int = min(_MAX_HOLD_BLOCKS, 1 << (n - 1))
            return self.block < at + hold
        return False

    # ------------------------------------------------------------------ decisions

    def _decide(self, entry_id: str, frame: ev.ChainBlock) -> list[ev.Event]:
        mode = self.mode
        found: list[Breach] = []
        for key, breach in self.scan(frame):
            if breach is None:
                self.rejected.pop(key, None)
                self.episodes.pop(key, None)
            elif not self._held(key) and self.episodes.get(key) != mode:
                found.append(breach)
        found.sort(key=lambda b: (b.health, b.key))
        out: list[ev.Event] = []
        for b in found:
            account, _, bucket = b.key.partition("/")
            iid = intent_id(account, bucket, entry_id)
            decision = b.decide(iid)
            if decision is None:
                continue
            intent = ev.LiquidationIntended(event_id=iid, ts_event=frame.ts_event,
                                            causation_id=frame.event_id, decision=decision)
            out.append(intent)
            self._pending[iid] = intent
            if mode == "live":
                self.busy[b.key] = iid
            else:
                self.episodes[b.key] = mode
        return out
