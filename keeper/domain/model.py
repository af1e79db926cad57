"""Parameters of markets and assets, and the pieces of an account a health number covers.

These types are shared by the event catalogue (``MarketListed`` carries a ``MarketParams``),
the projected state and the margin engine, so that what the log says is what the engine reads.
All amounts and prices are ``Decimal``: exact, and decimal strings on the wire.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keeper.domain import checks

__all__ = ["CROSS", "Account", "AssetParams", "Bucket", "MarketParams", "Position", "Tier", "bucket_key"]

CROSS = "cross"
"""The name of an account's cross bucket; any other bucket name is an isolated bucket."""


class Tier(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One maintenance bracket: ``MM = notional * rate - deduction`` for notional >= floor.

    ``deduction`` may be left out: it is then derived from the brackets below so that the
    schedule is continuous (``d_n = d_{n-1} + floor_n * (rate_n - rate_{n-1})``).
    """

    notional_floor: Decimal
    rate: Decimal
    deduction: Decimal | None = None

    __post_init__ = checks.params  # type: ignore[misc]


class MarketParams(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A perpetual market's risk parameters.

    Exactly one of ``mmf``, ``mmf_tiers`` or ``max_leverage`` gives the maintenance requirement
    (Hyperliquid derives ``mmf = 1 / (2 * max_leverage)``).
    """

    symbol: str
    mmf: Decimal | None = None
    imf: Decimal | None = None
    mmf_tiers: tuple[Tier, ...] = ()
    max_leverage: Decimal | None = None
    liquidation_fee: Decimal | None = None

    __post_init__ = checks.params  # type: ignore[misc]


class AssetParams(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A collateral or borrowable token's parameters (lending and weighted-collateral venues)."""

    symbol: str
    decimals: int | None = None
    liquidation_threshold: Decimal | None = None
    liquidation_bonus: Decimal | None = None
    liquidation_protocol_fee: Decimal | None = None
    asset_weight: Decimal | None = None
    liability_weight: Decimal | None = None

    __post_init__ = checks.params  # type: ignore[misc]


class Position(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A perpetual position: signed ``size`` (long > 0) and either ``entry_price`` or ``quote``.

    ``quote`` is the quote balance a venue like dYdX, Drift or Mango tracks in place of an entry
    price; with an entry price the equivalent quote is ``-size * entry_price``.
    """

    market: str
    size: Decimal
    entry_price: Decimal | None = None
    quote: Decimal | None = None

    def quote_value(self) -> Decimal:
        """The position's quote balance: PnL at price P is ``size * P + quote_value()``
        (``margin.health.quote_of`` is the same, compiled, for the engine and the screen)."""
        if self.quote is not None:
            return self.quote
        if self.entry_price is None:
            return Decimal(0)
        return -self.size * self.entry_price


class Bucket(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """What one health number covers: a cross bucket, or one isolated position or market.

    ``balances`` holds signed token amounts (positive: collateral, negative: debt).
    ``positions`` maps a market symbol to its position. Mutated in place by ``apply``.
    """

    name: str
    balances: dict[str, Decimal] = msgspec.field(default_factory=dict)
    positions: dict[str, Position] = msgspec.field(default_factory=dict)

    def symbols(self) -> list[str]:
        """Every market and asset whose price moves this bucket's health, sorted."""
        return sorted({*self.balances, *self.positions})


class Account(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An account: its cross bucket (if any) and its isolated buckets, by bucket name."""

    id: str
    buckets: dict[str, Bucket] = msgspec.field(default_factory=dict)

    def bucket(self, name: str) -> Bucket:
        """The named bucket, created empty on first use."""
        b = self.buckets.get(name)
        if b is None:
            b = self.buckets[name] = Bucket(name)
        return b


def bucket_key(account: str, bucket: str) -> str:
    """The stable text key of a bucket: ``account/bucket``."""
    return f"{account}/{bucket}"
