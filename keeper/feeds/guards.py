"""Price guards: small pure callables that say why a quote must not be recorded.

Each check returns ``None`` (accept) or a reason code; the caller (``keeper.feeds.pipeline``)
counts, logs and dead-letters the rejected quote. Nothing here does I/O or reads a clock.

Reason codes: ``nan``, ``infinite``, ``zero``, ``negative`` (the value), ``wrong_exponent``
(a price with more decimal places or digits than a configured bound: a mis-scaled feed),
``out_of_order`` (older than the last accepted publish time of the same source and symbol).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from keeper.feeds.parsers import Quote

__all__ = ["Check", "OrderGuard", "check_value", "exceeds", "exponent_check", "relative_move"]

Check = Callable[[Quote], str | None]


def check_value(q: Quote) -> str | None:
    """NaN, infinities, zero and negative prices are never recorded."""
    p = q.price
    if p.is_finite() and p > 0:  # the hot path: one call and one comparison
        return None
    if p.is_nan():
        return "nan"
    if p.is_infinite():
        return "infinite"
    if p.is_zero():
        return "zero"
    if p.is_signed():
        return "negative"
    return None


def exponent_check(min_exponent: int = -18, max_digits: int = 30) -> Check:
    """Reject prices finer than ``10^min_exponent`` or longer than ``max_digits`` digits.

    A price that needs 40 decimal places, or ``1E+40``, is a mis-scaled exponent, not a market.
    """

    def check_exponent(q: Quote) -> str | None:
        t = q.price.as_tuple()
        if not isinstance(t.exponent, int):
            return None  # special values are check_value's business
        if t.exponent < min_exponent or len(t.digits) + t.exponent > max_digits:
            return "wrong_exponent"
        return None

    return check_exponent


class OrderGuard:
    """Out-of-order check: remembers the last accepted publish time per (source, symbol).

    ``check`` does not remember; ``accept`` does, so a quote rejected later in the pipeline does
    not move the bar. Equal times pass (a resent message has the same event id and the log drops
    it as a duplicate).
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    def check(self, q: Quote) -> str | None:
        last = self._last.get((q.source, q.symbol))
        if last is not None and q.publish_time < last:
            return "out_of_order"
        return None

    def accept(self, q: Quote) -> None:
        self._last[(q.source, q.symbol)] = q.publish_time

    def last(self, source: str, symbol: str) -> int | None:
        return self._last.get((source, symbol))


def relative_move(old: Decimal, new: Decimal) -> Decimal:
    """``|new - old| / old`` (old > 0)."""
    return abs(new - old) / old


def exceeds(old: Decimal, new: Decimal, limit: Decimal | None) -> bool:
    """Whether ``new`` is more than ``limit`` (relative) away from ``old``; no limit: never."""
    return limit is not None and relative_move(old, new) > limit
