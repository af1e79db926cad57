"""The reference venue's own model: listed markets and assets, accounts, buckets and positions.

Written apart from the keeper's model (``keeper.domain.model``, never imported here) so that the
venue is an independent second opinion: the only thing it shares with the keeper is the wire
format of events. ``Market.of`` and ``Asset.of`` read a listing event's parameters into the
venue's records, keeping only what the venue's rules use (``keeper.sim.venue``).

Contract: a ``Bucket`` holds non-zero balances only (an amount that reaches zero is removed by
``Bucket.credit``) and open positions only; records compare by value (msgspec structs: cheap to
build, as a venue loading a book of thousands of accounts needs).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keeper.domain import events as ev

__all__ = ["Account", "Asset", "Bucket", "MarginTier", "Market", "Position"]


class MarginTier(msgspec.Struct, frozen=True, gc=False):
    """One bracket of a tiered maintenance rate: ``rate`` from ``notional_floor`` up, with its
    fixed ``deduction`` (None: derived from the brackets below, as venues publish them)."""

    notional_floor: Decimal
    rate: Decimal
    deduction: Decimal | None = None


class Market(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A listed perp market as the venue judges it: a flat maintenance fraction ``mmf``, else
    ``1 / (2 · max_leverage)``, else the tiers; ``liquidation_fee`` None means the venue's default."""

    symbol: str
    mmf: Decimal | None = None
    max_leverage: Decimal | None = None
    mmf_tiers: tuple[MarginTier, ...] = ()
    liquidation_fee: Decimal | None = None

    @classmethod
    def of(cls, listing: ev.MarketListed | ev.MarketParamsChanged) -> Market:
        """The venue's record of a market listing (or its replacement)."""
        p = listing.params
        return cls(symbol=p.symbol, mmf=p.mmf, max_leverage=p.max_leverage,
                   mmf_tiers=tuple(MarginTier(t.notional_floor, t.rate, t.deduction) for t in p.mmf_tiers),
                   liquidation_fee=p.liquidation_fee)


class Asset(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A listed asset as the venue judges it: base-unit ``decimals`` and its lending
    ``liquidation_threshold`` and ``liquidation_bonus`` (None where the listing gives none)."""

    symbol: str
    decimals: int | None = None
    liquidation_threshold: Decimal | None = None
    liquidation_bonus: Decimal | None = None

    @classmethod
    def of(cls, listing: ev.AssetListed | ev.AssetParamsChanged) -> Asset:
        """The venue's record of an asset listing (or its replacement)."""
        p = listing.params
        return cls(symbol=p.symbol, decimals=p.decimals, liquidation_threshold=p.liquidation_threshold,
                   liquidation_bonus=p.liquidation_bonus)


class Position(msgspec.Struct, frozen=True, gc=False):
    """An open perp position: signed ``size`` (long > 0), its ``entry_price`` (None: the venue
    takes the mark, so no PnL) and ``quote`` (carried through to the events the venue emits)."""

    market: str
    size: Decimal
    entry_price: Decimal | None = None
    quote: Decimal | None = None


class Bucket(msgspec.Struct, gc=False):
    """One margin bucket of an account: signed balances per asset (< 0 is debt) and positions."""

    name: str
    balances: dict[str, Decimal] = msgspec.field(default_factory=dict)
    positions: dict[str, Position] = msgspec.field(default_factory=dict)

    def credit(self, asset: str, amount: Decimal) -> None:
        """Add ``amount`` (signed) to the balance of ``asset``; a zero balance is removed."""
        bal = self.balances.get(asset, Decimal(0)) + amount
        if bal:
            self.balances[asset] = bal
        else:
            self.balances.pop(asset, None)


class Account(msgspec.Struct, gc=False):
    """An account at the venue: its buckets by name (``cross``, ``iso-<market>``, ``lend-<asset>``)."""

    id: str
    buckets: dict[str, Bucket] = msgspec.field(default_factory=dict)

    def bucket(self, name: str) -> Bucket:
        """The bucket ``name``, created empty on first use."""
        b = self.buckets.get(name)
        if b is None:
            b = self.buckets[name] = Bucket(name)
        return b
