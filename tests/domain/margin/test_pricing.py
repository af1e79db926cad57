"""The pricing context: immutable, read-only for the engine, the same answers as its parts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.domain.margin import (
    NO_EXTRAS,
    Pricing,
    evaluate,
    get_profile,
    liquidation_price,
    plan_liquidation,
)
from keeper.domain.model import Bucket, MarketParams, Position

D = Decimal
MARKETS = {"ETH": MarketParams(symbol="ETH", mmf=D("0.05"))}


def _sick() -> Bucket:
    return Bucket("iso", {"USDC": D(100)}, {"ETH": Position("ETH", D(1), quote=D(-2990))})


def test_pricing_cannot_be_changed_and_defaults_to_no_extras() -> None:
    pricing = Pricing(get_profile("generic-perp"), MARKETS, {}, {"ETH": D(3000), "USDC": D(1)})
    assert pricing.extras is NO_EXTRAS
    with pytest.raises(AttributeError):
        pricing.prices = {}  # type: ignore[misc]


def test_with_price_moves_one_price_and_leaves_the_original_alone() -> None:
    prices = {"ETH": D(3000), "USDC": D(1)}
    pricing = Pricing(get_profile("generic-perp"), MARKETS, {}, prices)
    moved = pricing.with_price("ETH", D(2000))
    assert moved.prices == {"ETH": D(2000), "USDC": D(1)}
    assert pricing.prices == {"ETH": D(3000), "USDC": D(1)}
    assert prices == {"ETH": D(3000), "USDC": D(1)}
    assert (moved.profile, moved.markets, moved.assets, moved.extras) == (
        pricing.profile, pricing.markets, pricing.assets, pricing.extras)


def test_the_engine_leaves_the_mappings_it_is_given_unchanged() -> None:
    prices = {"ETH": D(3000), "USDC": D(1)}
    markets = dict(MARKETS)
    pricing = Pricing(get_profile("generic-perp"), markets, {}, prices)
    bucket = _sick()
    assert evaluate(pricing, bucket).liquidatable
    assert liquidation_price(pricing, bucket, "ETH") is not None
    assert plan_liquidation(pricing, bucket) is not None
    assert prices == {"ETH": D(3000), "USDC": D(1)}
    assert markets == MARKETS
