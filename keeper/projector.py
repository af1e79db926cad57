"""The projector: the async shell that folds the log into a sans-I/O core.

It reads the log in batches after the core's offset, hands each entry to ``core.handle``,
appends whatever the core returns (a keeper core returns its ``LiquidationIntended`` outbox
entries), and snapshots the core together with the log offset it reflects every
``snapshot_every`` events or ``snapshot_interval_s`` seconds. Start-up and recovery are the same
path (crash-only): load the newest valid snapshot, re-append the core's pending output (the log's
duplicate suppression makes that safe), replay the tail.

A snapshot is ``MAGIC + format + core bytes``; one of another format or that fails to decode is
skipped with a warning and never trusted; the projector then replays from the beginning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from keeper.domain import state as st
from keeper.domain.codec import encode
from keeper.domain.events import Event, event_type
from keeper.errors import LogError, SnapshotError
from keeper.ports import EventLog, SnapshotStore

__all__ = ["MAGIC", "Core", "CoreFactory", "ProjectionCore", "Projector", "unwrap_snapshot", "wrap_snapshot"]

log = structlog.get_logger("keeper.projector")

MAGIC = b"KSNAP"


class Core(Protocol):
    """What the projector drives: pure, fed entries in log order."""

    @property
    def offset(self) -> str: ...

    def handle(self, entry_id: str, event: Event) -> Sequence[Event]: ...

    def snapshot(self) -> bytes: ...

    def pending(self) -> Sequence[Event]: ...


class ProjectionCore:
    """The plain projection: state only, returns nothing to append."""

    FORMAT = st.STATE_FORMAT

    def __init__(self, state: st.State | None = None) -> None:
        self.state = state if state is not None else st.State()
        self.quarantined: list[tuple[str, Event, str]] = []
        self.quarantined_total = 0

    @property
    def offset(self) -> str:
        return self.state.offset

    def handle(self, entry_id: str, event: Event) -> Sequence[Event]:
        """Apply one entry; one that raises is quarantined as ``KeeperCore.handle`` does."""
        try:
            st.apply(self.state, entry_id, event)
        except Exception as exc:  # the boundary: one entry never stops the fold
            if self.state.offset != entry_id:
                self.state.offset = entry_id
                self.state.applied += 1
            self.quarantined.append((entry_id, event, f"{type(exc).__name__}: {exc}"))
            self.quarantined_total += 1
        return ()

    def take_quarantined(self) -> list[tuple[str, Event, str]]:
        out, self.quarantined = self.quarantined, []
        return out

    def snapshot(self) -> bytes:
        return st.encode_state(self.state)

    def pending(self) -> Sequence[Event]:
        return ()

    @classmethod
    def restore(cls, data: bytes) -> ProjectionCore:
        return cls(st.decode_state(data))


CoreFactory = Callable[[bytes | None], Core]
"""Builds a core from snapshot bytes (``None``: a fresh core). Raises on bytes it cannot trust."""


def _consumed(pairs: list[tuple[str, Event]], offset: str) -> int:
    """How many of ``pairs`` the core has applied: up to and including the one at ``offset``
    (all of them when its offset is not among them: it consumed the lot)."""
    for i in range(len(pairs) - 1, -1, -1):
        if pairs[i][0] == offset:
            return i + 1
    return len(pairs)


def wrap_snapshot(fmt: int, data: bytes) -> bytes:
    return MAGIC + fmt.to_bytes(2, "big") + data


def unwrap_snapshot(fmt: int, blob: bytes) -> bytes:
    if not blob.startswith(MAGIC):
        raise SnapshotError("not a keeper snapshot")
    got = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 2], "big")
    if got != fmt:
        raise SnapshotError(f"snapshot format {got}, this keeper reads {fmt}")
    return blob[len(MAGIC) + 2:]


class Projector:
    """Drives ``core`` from ``log``; see the module docstring for the contract."""

    def __init__(
        self,
        log_: EventLog,
        snapshots: SnapshotStore,
        factory: CoreFactory,
        *,
        name: str = "projector",
        fmt: int = st.STATE_FORMAT,
        batch: int = 1000,
        snapshot_every: int = 100_000,
        snapshot_interval_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        stream: bool = False,
    ) -> None:
        """``stream``: let a core that can (``streaming``) append a burst's intents chunk by
        chunk (the daemon: first submissions leave sooner); replay never needs it."""
        self.log = log_
        self.snapshots = snapshots
        self.factory = factory
        self.name = name
        self.fmt = fmt
        self.batch = batch
        self.stream = stream
        self.snapshot_every = snapshot_every
        self.snapshot_interval_s = snapshot_interval_s
        self._monotonic = monotonic
        self.core: Core | None = None
        self.applied = 0
        self.appended = 0
        self.quarantined = 0
        """Entries the core could not apply (dead-lettered with the error): an alarm."""
        self._held_out: list[Event] = []
        self._unapplied: list[tuple[str, Event]] = []
        """Entries read but not handed to the core yet (after a streaming core's burst)."""
        self._held_dead: list[tuple[str, Event, str]] = []
        self.restored_from: str | None = None
        self._since_snapshot = 0
        self._last_snapshot_t = monotonic()
        self._snapshot_offset: str | None = None
        self.position = "0-0"
        """Where reading continues: the core's offset, or past entries that were dead-lettered."""

    async def start(self) -> Core:
        """Load the newest valid snapshot (or start fresh) and re-append pending output."""
        core: Core | None = None
        found = await self.snapshots.load(self.name)
        if found is not None:
            offset, blob = found
            try:
                core = self.factory(unwrap_snapshot(self.fmt, blob))
                if core.offset != offset:
                    raise SnapshotError(f"snapshot says offset {core.offset}, store says {offset}")
                self.restored_from = offset
                self._snapshot_offset = offset
                log.info("snapshot_loaded", projector=self.name, offset=offset, bytes=len(blob))
            except Exception as exc:  # any failure means: do not trust it
                log.warning("snapshot_skipped", projector=self.name, offset=offset, reason=str(exc))
                core = None
        if core is None:
            core = self.factory(None)
        if self.stream and hasattr(core, "streaming"):
            core.streaming = True
        self.core = core
        self.position = core.offset
        pending = list(core.pending())
        if pending:
            ids = await self.log.append(pending)
            log.info("pending_reappended", projector=self.name, events=len(pending),
                     new=sum(1 for i in ids if i is not None))
        return core

    async def step(self, block_ms: int | None = None) -> int:
        """Read and apply one batch; returns the number of entries applied.

        What the batch makes the core say (intents, dead letters) is appended before the next
        batch is read. When that append fails (``LogError``: Redis down, refusing writes) the
        error propagates and the output is held: the next ``step`` appends it first (the same
        event ids, so a write that did land is dropped as a duplicate), so the core never
        decides on entries past a decision it could not record. A snapshot that cannot be
        written is skipped (logged) and tried again an interval later.

        A core that streams a burst (``streaming``: a keeper core deciding one entry's many
        breaches in chunks) has each chunk's intents appended before it checks the next, so the
        first submissions leave while the rest is decided; the entries after the one that made
        the burst wait until it is drained (``_apply``).
        """
        core = self.core if self.core is not None else await self.start()
        await self._flush()
        if self._unapplied or getattr(core, "backlog", None) is not None:
            n = await self._apply(core, self._unapplied)  # a burst a failed append interrupted
        else:
            entries, self.position = await self.log.read_batch(self.position, self.batch, block_ms)
            if not entries:
                tidy = getattr(core, "tidy", None)
                if tidy is not None:  # nothing new: the core's upkeep, out of the next burst's way
                    tidy()
                return 0
            n = await self._apply(core, [(entry.id, entry.event) for entry in entries])
        if self._since_snapshot >= self.snapshot_every or (
            self._monotonic() - self._last_snapshot_t >= self.snapshot_interval_s
        ):
            try:
                await self.snapshot()
            except LogError as exc:
                self._last_snapshot_t = self._monotonic()
                log.warning("snapshot_not_written", projector=self.name, error=str(exc)[:300])
        return n

    async def _apply(self, core: Core, pairs: list[tuple[str, Event]]) -> int:
        """Hand ``pairs`` to the core (one ``handle_batch`` where it has one) and append what it
        says; a streaming core's backlog is drained chunk by chunk, each appended, before the
        entries after the one that made it. Returns the entries applied."""
        self._unapplied = pairs
        batch = getattr(core, "handle_batch", None)
        applied = 0
        while True:
            out: list[Event] = []
            if getattr(core, "backlog", None) is not None:
                out.extend(core.continue_backlog())  # type: ignore[attr-defined]
            elif self._unapplied:
                todo = self._unapplied
                if batch is not None:
                    out.extend(batch(todo))
                else:
                    for entry_id, event in todo:
                        out.extend(core.handle(entry_id, event))
                done = _consumed(todo, core.offset)
                self._unapplied = todo[done:]
                applied += done
                self.applied += done
                self._since_snapshot += done
            else:
                break
            take = getattr(core, "take_quarantined", None)
            if take is not None:
                for entry_id, event, error in take():
                    self.quarantined += 1
                    log.error("entry_quarantined", projector=self.name, entry_id=entry_id,
                              type=event_type(event), error=error[:500])
                    self._held_dead.append((entry_id, event, error))
            self._held_out.extend(out)
            await self._flush()
        return applied

    @property
    def holding(self) -> int:
        """Events the core produced that are not in the log yet (a failed append holds them)."""
        return len(self._held_out) + len(self._held_dead)

    async def _flush(self) -> None:
        """Append what the core produced and a failed append left held, oldest first."""
        while self._held_dead:
            entry_id, event, error = self._held_dead[0]
            await self._dead_letter(entry_id, event, error)
            self._held_dead.pop(0)
        if self._held_out:
            ids = await self.log.append(self._held_out)
            self.appended += sum(1 for i in ids if i is not None)
            self._held_out = []

    async def _dead_letter(self, entry_id: str, event: Event, error: str) -> None:
        """An entry the core quarantined: into the dead-letter stream (once per entry id, so a
        restart that applies the tail again does not repeat it)."""
        await self.log.dead_letter("projector", "apply_failed", f"{self.name}: {error}"[:2000],
                                   encode(event), ref=f"{self.name}@{entry_id}")

    async def catch_up(self) -> int:
        """Apply everything in the log now; returns the number of entries applied."""
        total = 0
        while True:
            before = self.position
            total += await self.step()
            if self.position == before:
                return total

    async def run(self, stop: asyncio.Event, block_ms: int = 200) -> None:
        """Follow the log until ``stop`` is set, then write a final snapshot."""
        if self.core is None:
            await self.start()
        while not stop.is_set():
            await self.step(block_ms=block_ms)
        await self.snapshot()

    async def snapshot(self) -> None:
        """Write the core and its offset together (one atomic write in the store)."""
        core = self.core
        if core is None or core.offset == self._snapshot_offset:
            return
        blob = wrap_snapshot(self.fmt, core.snapshot())
        await self.snapshots.save(self.name, core.offset, blob)
        self._snapshot_offset = core.offset
        self._since_snapshot = 0
        self._last_snapshot_t = self._monotonic()
        log.info("snapshot_written", projector=self.name, offset=core.offset, bytes=len(blob))
