"""``Pricing``: what every margin function reads besides the bucket itself.

A bucket's health, its liquidation and bankruptcy prices and its liquidation plan are functions
of the bucket and of one *pricing context*: the venue's conventions (``profile``), the markets'
and assets' parameters, the prices and the venue extras. The engine's functions take
``(pricing, bucket, ...)``; none of them changes the context or anything it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec

from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import NO_EXTRAS, Extras
from keeper.domain.model import AssetParams, MarketParams

__all__ = ["Pricing"]


class Pricing(msgspec.Struct, frozen=True):
    """The inputs a margin function reads beside the bucket, fixed for one evaluation.

    * ``profile``: the venue's conventions (``profiles.get_profile``).
    * ``markets``: market symbol to its ``MarketParams`` (perpetual buckets; ``{}`` for lending).
    * ``assets``: asset symbol to its ``AssetParams`` (``{}`` where no asset has parameters).
    * ``prices``: symbol to price; every symbol a bucket holds must be priced (``MissingPrice``).
    * ``extras``: what MarginFi, Vertex and Aevo read beyond market and asset parameters
      (``types.Extras``); empty by default, and ignored by every other profile.

    The object is immutable and the margin functions only read the mappings it holds; they are
    held by reference (the keeper's live state passes its own dicts, no copy), so a caller that
    changes one of them afterwards changes what a later evaluation sees. ``with_prices`` is the
    same context at other prices (the price solvers, what-if views).
    """

    profile: Profile
    markets: Mapping[str, MarketParams]
    assets: Mapping[str, AssetParams]
    prices: Mapping[str, Decimal]
    extras: Extras = NO_EXTRAS

    def with_prices(self, prices: Mapping[str, Decimal]) -> Pricing:
        """The same profile, parameters and extras at ``prices``."""
        return Pricing(self.profile, self.markets, self.assets, prices, self.extras)

    def with_price(self, symbol: str, price: Decimal) -> Pricing:
        """The same context with ``symbol`` at ``price``, every other price held."""
        prices = dict(self.prices)
        prices[symbol] = price
        return self.with_prices(prices)
