"""The field checks an event runs when it is built or decoded (its ``__post_init__``), compiled
(``keeper/_compiled.py``).

msgspec calls a Struct's ``__post_init__`` with the new object as its one argument, once per
decoded event: a replay of an export runs one per line, so the checks are a visible share of
decoding a price tick (``docs/performance.md``). These functions are the checks, with their
messages, compiled; ``keeper.domain.events`` installs them as the classes' ``__post_init__``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from keeper.domain import limits

__all__ = [
    "amount",
    "amount_event",
    "bounded",
    "chain_block",
    "chain_log",
    "finite",
    "finite_positive",
    "funding_applied",
    "params",
    "position_changed",
    "price",
    "price_updated",
    "times",
]

_ZERO: Final = Decimal(0)
_PRICE_MAX: Final = limits.PRICE_MAX_EXP
_PRICE_MIN: Final = limits.PRICE_MIN_EXP
_AMOUNT_MAX: Final = limits.AMOUNT_MAX_EXP
_AMOUNT_MIN: Final = limits.AMOUNT_MIN_EXP
_PARAM_MAX: Final = limits.PARAM_MAX_EXP
_PARAM_MIN: Final = limits.PARAM_MIN_EXP
_TIME_MAX: Final = limits.TIME_MAX_US


def finite_positive(name: str, value: Decimal) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def finite(name: str, value: Decimal) -> None:
    """Raise ValueError unless ``value`` is finite."""
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")


def bounded(name: str, value: Decimal, max_exp: int, min_exp: int) -> None:
    """Raise ValueError unless ``value`` is finite and 0 or of magnitude in
    ``[10**min_exp, 10**(max_exp + 1))`` (``keeper.domain.limits``)."""
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    if value:
        a = value.adjusted()
        if a > max_exp or a < min_exp:
            raise ValueError(f"{name} out of range: |{name}| must be 0 or in "
                             f"[1e{min_exp}, 1e{max_exp + 1}), got {_short(value)}")


def _short(value: Decimal) -> str:
    """A number for an error message, at most ~40 characters (a 100,000-digit one is cut)."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def price(name: str, value: Decimal) -> None:
    """A price: finite, > 0 and within ``limits.PRICE_*``."""
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"{name} must be a finite number > 0, got {_short(value)}")
    a = value.adjusted()
    if a > _PRICE_MAX or a < _PRICE_MIN:
        raise ValueError(f"{name} must be in [1e{_PRICE_MIN}, 1e{_PRICE_MAX + 1}), "
                         f"got {_short(value)}")


def amount(name: str, value: Decimal) -> None:
    """A signed amount within ``limits.AMOUNT_*``."""
    bounded(name, value, _AMOUNT_MAX, _AMOUNT_MIN)


def times(e: Any) -> None:
    """Every event: ``ts_event`` and ``ts_ingest`` in ``[0, limits.TIME_MAX_US)``."""
    ts: int = e.ts_event
    ingest: int = e.ts_ingest
    if ts < 0 or ts >= _TIME_MAX:
        raise ValueError(f"ts_event must be in [0, {_TIME_MAX}) microseconds, got {ts}")
    if ingest < 0 or ingest >= _TIME_MAX:
        raise ValueError(f"ts_ingest must be in [0, {_TIME_MAX}) microseconds, got {ingest}")


def price_updated(e: Any) -> None:
    """``PriceUpdated``: the price is > 0 and within the limits; spread and confidence too."""
    times(e)
    price("price", e.price)
    published: int = e.publish_time
    if published < 0 or published >= _TIME_MAX:
        raise ValueError(f"publish_time must be in [0, {_TIME_MAX}) microseconds, got {published}")
    spread: Decimal | None = e.spread
    if spread is not None:
        amount("spread", spread)
    conf: Decimal | None = e.conf
    if conf is not None:
        amount("conf", conf)


def amount_event(e: Any) -> None:
    """Deposit, withdraw, borrow, repay: the amount is > 0 and within the limits."""
    times(e)
    value: Decimal = e.amount
    finite_positive("amount", value)
    amount("amount", value)


def position_changed(e: Any) -> None:
    """``PositionChanged``: size, realised PnL and quote within the limits, the entry price a
    price."""
    times(e)
    amount("size", e.size)
    amount("realized_pnl", e.realized_pnl)
    entry: Decimal | None = e.entry_price
    if entry is not None:
        price("entry_price", entry)
    quote: Decimal | None = e.quote
    if quote is not None:
        amount("quote", quote)


def funding_applied(e: Any) -> None:
    """``FundingApplied``: the amount (signed) is within the limits."""
    times(e)
    amount("amount", e.amount)


def params(e: Any) -> None:
    """``MarketParams``, ``AssetParams``, ``Tier``: every number within ``limits.PARAM_*``
    (a tier's floor and deduction in quote units within the amount limits)."""
    for name in e.__struct_fields__:
        value = getattr(e, name)
        if isinstance(value, Decimal):
            if name in ("notional_floor", "deduction"):
                amount(name, value)
            else:
                bounded(name, value, _PARAM_MAX, _PARAM_MIN)
        elif isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 77:
            raise ValueError(f"{name} must be in [0, 77], got {value}")


_UINT256_END: Final = 1 << 256


def _uint256(name: str, value: int) -> None:
    if value < 0 or value >= _UINT256_END:
        raise ValueError(f"{name} must be a uint256 (0 <= x < 2**256), got {value}")


def chain_log(e: Any) -> None:
    """``ChainLog``: block, log index and time non-negative, every integer argument a uint256."""
    times(e)
    _uint256("block", e.block)
    _uint256("log_index", e.log_index)
    _uint256("block_time", e.block_time)
    args: dict[str, int | str] = e.args
    for k, v in args.items():
        if isinstance(v, int):
            _uint256("args." + k, v)


def chain_block(e: Any) -> None:
    """``ChainBlock``: block and time non-negative, prices > 0 and rates uint256."""
    times(e)
    _uint256("block", e.block)
    _uint256("block_time", e.block_time)
    prices: dict[str, int] = e.prices
    for k, v in prices.items():
        if v <= 0 or v >= _UINT256_END:
            raise ValueError(f"prices.{k} must be > 0 and < 2**256, got {v}")
    rates: dict[str, int] = e.rates
    for k, v in rates.items():
        _uint256("rates." + k, v)
