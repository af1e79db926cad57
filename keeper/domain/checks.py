"""The field checks an event runs when it is built or decoded (its ``__post_init__``), compiled
(``keeper/_compiled.py``).

msgspec calls a Struct's ``__post_init__`` with the new object as its one argument, once per
decoded event: a replay of an export runs one per line. As interpreted methods they were ~15% of
decoding a price tick; these are the same checks, with the same messages, as compiled functions
that ``keeper.domain.events`` installs as the classes' ``__post_init__``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

_ZERO: Final = Decimal(0)


def finite_positive(name: str, value: Decimal) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def finite(name: str, value: Decimal) -> None:
    """Raise ValueError unless ``value`` is finite."""
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")


def price_updated(e: Any) -> None:
    """``PriceUpdated``: the price is a finite number > 0."""
    finite_positive("price", e.price)


def amount_event(e: Any) -> None:
    """Deposit, withdraw, borrow, repay: the amount is a finite number > 0."""
    finite_positive("amount", e.amount)


def position_changed(e: Any) -> None:
    """``PositionChanged``: size, realised PnL and quote finite, the entry price > 0."""
    finite("size", e.size)
    finite("realized_pnl", e.realized_pnl)
    entry: Decimal | None = e.entry_price
    if entry is not None:
        finite_positive("entry_price", entry)
    quote: Decimal | None = e.quote
    if quote is not None:
        finite("quote", quote)


def funding_applied(e: Any) -> None:
    """``FundingApplied``: the amount (signed) is finite."""
    finite("amount", e.amount)
