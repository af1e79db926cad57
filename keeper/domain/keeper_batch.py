"""The fast twin of ``KeeperCore.handle``: a batch of log entries in one call.

Reference: ``KeeperCore.handle`` (``keeper.domain.decide``), one entry at a time.
``handle_batch(core, entries)`` must give the same intents, in the same order, and leave the core
in the same state (snapshot bytes) as ``handle`` on each entry in turn, for any split of a log
into batches: ``tests/domain/keeper/test_keeper_batch.py`` and ``tests/domain/keeper/test_frames.py`` check it
over generated logs, ``tests/projector/test_quarantine.py`` with entries that raise.

What it does differently, and why (``docs/keeper.md``, *Reference and fast paths*, has the
figures): a price tick while the core holds no unhealthy episode and no rejection (nearly every
entry of a replay) is folded here, with ``state.apply``'s price handler and ``_follow``'s price
branch written inline, the tick's fields read in one ``astuple`` call and the state's position
and log time kept in locals across a run of ticks. Every other entry goes through ``handle``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec

from keeper.domain.events import Event, PriceUpdated

if TYPE_CHECKING:
    from keeper.domain.decide import KeeperCore

__all__ = ["handle_batch"]

# a module global is a dict lookup at each use in compiled code, a C static is not; a msgspec
# Struct's attribute read is a generic lookup: a tick's fields come from one astuple call
_TICK: Final = PriceUpdated
_astuple: Final[Callable[[Any], tuple[Any, ...]]] = msgspec.structs.astuple
_SYMBOL: Final = PriceUpdated.__struct_fields__.index("symbol")
_PRICE: Final = PriceUpdated.__struct_fields__.index("price")
_PUBLISHED: Final = PriceUpdated.__struct_fields__.index("publish_time")
_TS: Final = PriceUpdated.__struct_fields__.index("ts_event")
_MORE: Final = PriceUpdated.__struct_fields__.index("frame_more")


def handle_batch(core: KeeperCore, entries: Sequence[tuple[str, Event]]) -> list[Event]:
    """``core.handle`` for each entry in order, the intents concatenated; a streaming core
    (``KeeperCore.streaming``) stops after the entry that left a ``backlog``."""
    out: list[Event] = []
    state = core.state
    screen = core.screen
    prices, price_time = state.prices, state.price_time
    # a run of ticks keeps the state's position and log time in locals (msgspec attribute
    # writes are generic): written back before anything reads them (a decision, another
    # entry's handle), at the end, and if a tick raises
    offset, applied, log_time = state.offset, state.applied, state.log_time
    held = False
    try:
        for entry_id, event in entries:
            if type(event) is not _TICK or core._episodes or core._rejected:
                if held:
                    state.offset, state.applied, state.log_time = offset, applied, log_time
                    held = False
                decided = core.handle(entry_id, event)
                offset, applied, log_time = state.offset, state.applied, state.log_time
                if decided:
                    out.extend(decided)
                if core.backlog is not None:
                    break  # streaming: the caller drains the backlog first
                continue
            # state.apply(state, entry_id, event) for a tick
            f = _astuple(event)
            symbol: str = f[_SYMBOL]
            price: Decimal = f[_PRICE]
            ts: int = f[_TS]
            prices[symbol] = price
            price_time[symbol] = f[_PUBLISHED] or ts
            offset = entry_id
            applied += 1
            if ts > log_time:  # noqa: PLR1730 (max() is a generic call)
                log_time = ts
            held = True
            core.rechecked_last = 0
            try:
                # core._follow(event) for a tick with no episode or rejection to end
                keys = screen.candidates(symbol, price)
                if f[_MORE]:  # more prices of this instant follow: decide with them
                    core._frame.extend(keys)
                    continue
                if keys or core._frame:
                    state.offset, state.applied, state.log_time = offset, applied, log_time
                    held = False
                    decided = core._decide_with_frame(keys, None, entry_id, event, tick=True)
                    if decided:
                        out.extend(decided)
                    if core.backlog is not None:
                        break  # streaming: the caller drains the backlog first
            except Exception as exc:  # as ``handle``: quarantined
                if held:
                    state.offset, state.applied, state.log_time = offset, applied, log_time
                    held = False
                core.quarantine(entry_id, event, exc)
                offset, applied, log_time = state.offset, state.applied, state.log_time
    finally:
        if held:
            state.offset, state.applied, state.log_time = offset, applied, log_time
    return out
