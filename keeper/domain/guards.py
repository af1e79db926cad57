"""Decision-time guards: pure checks on the projected state, no I/O, no clock.

The feed layer decides *when* a market is unsafe and records it in the log (``FeedStale`` /
``FeedRecovered``); the operator's kill switch and per-market pauses are ``KeeperPaused`` /
``KeeperResumed``. ``apply`` folds them into ``state.unsafe`` and ``state.paused``; these
functions read them when the keeper is about to decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

__all__ = ["KILL_SWITCH", "bad_prices", "paused_scope", "unsafe_symbols"]

KILL_SWITCH = "*"
"""The pause scope that stops every submission (decisions continue in paper mode)."""


def unsafe_symbols(symbols: Iterable[str], unsafe: Mapping[str, str]) -> list[str]:
    """The symbols (sorted) of a bucket that are marked unsafe: any one blocks a decision."""
    return sorted(s for s in symbols if s in unsafe)


def bad_prices(symbols: Iterable[str], prices: Mapping[str, Decimal]) -> list[str]:
    """Symbols whose price is missing, non-finite or not positive.

    Events reject such prices at construction, so this never fires on a sound log; it is the
    last line before money moves.
    """
    out = []
    for s in sorted(set(symbols)):
        p = prices.get(s)
        if p is None or not p.is_finite() or p <= 0:
            out.append(s)
    return out


def paused_scope(symbols: Iterable[str], paused: Mapping[str, str]) -> str | None:
    """The pause that applies to a bucket: the kill switch first, else its first paused symbol."""
    if KILL_SWITCH in paused:
        return KILL_SWITCH
    hits = sorted(s for s in symbols if s in paused)
    return hits[0] if hits else None
