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


_UINT256_END: Final = 1 << 256


def _uint256(name: str, value: int) -> None:
    if value < 0 or value >= _UINT256_END:
        raise ValueError(f"{name} must be a uint256 (0 <= x < 2**256), got {value}")


def chain_log(e: Any) -> None:
    """``ChainLog``: block, log index and time non-negative, every integer argument a uint256."""
    _uint256("block", e.block)
    _uint256("log_index", e.log_index)
    _uint256("block_time", e.block_time)
    args: dict[str, int | str] = e.args
    for k, v in args.items():
        if isinstance(v, int):
            _uint256("args." + k, v)


def chain_block(e: Any) -> None:
    """``ChainBlock``: block and time non-negative, prices > 0 and rates uint256."""
    _uint256("block", e.block)
    _uint256("block_time", e.block_time)
    prices: dict[str, int] = e.prices
    for k, v in prices.items():
        if v <= 0 or v >= _UINT256_END:
            raise ValueError(f"prices.{k} must be > 0 and < 2**256, got {v}")
    rates: dict[str, int] = e.rates
    for k, v in rates.items():
        _uint256("rates." + k, v)
