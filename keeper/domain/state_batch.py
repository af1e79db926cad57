"""The fast twin of ``state.apply``: a batch of log entries folded in one call.

Reference: ``keeper.domain.state.apply``, one entry at a time. ``apply_many(state, entries)``
must leave the same state (encoded bytes) as ``apply`` on each entry in turn, for any split of
a log into batches: ``tests/domain/test_apply_many.py`` checks it over generated histories.

What it does differently, and why (``docs/keeper.md``, *Reference and fast paths*, has the
figure): the handler table and the state's dicts are looked up once per batch, a price tick
(most entries) is folded inline, and the state's count and log time are written once at the
end. Used where a rebuild folds decoded batches with no decisions (``bench/bench_log.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from keeper.domain import events as ev
from keeper.domain.state import HANDLERS, State

__all__ = ["apply_many"]


def apply_many(state: State, entries: Iterable[tuple[str, ev.Event]]) -> State:
    """``apply`` on each ``(entry id, event)`` in order (in place); returns ``state``."""
    handlers = HANDLERS
    price_type = ev.PriceUpdated
    prices, price_time = state.prices, state.price_time
    log_time = state.log_time
    n = 0
    entry_id = None
    for entry_id, e in entries:  # noqa: B007 (the last id is the new offset)
        t = type(e)
        if t is price_type:  # state._price, inlined
            prices[e.symbol] = e.price  # type: ignore[attr-defined]
            price_time[e.symbol] = e.publish_time or e.ts_event  # type: ignore[attr-defined]
        else:
            handlers[t](state, e)
        n += 1
        ts = e.ts_event
        if ts > log_time:  # noqa: PLR1730 (max() is a call per entry)
            log_time = ts
    if entry_id is not None:
        state.offset = entry_id
    state.applied += n
    state.log_time = log_time
    return state
