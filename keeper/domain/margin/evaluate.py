"""``evaluate``: one bucket's health under one profile (dispatch to the perp or lending model)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from keeper.domain.margin.health import perp_liquidatable, perp_terms
from keeper.domain.margin.lending import lending_liquidatable, lending_terms
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import INF, BucketHealth, exact
from keeper.domain.model import AssetParams, Bucket, MarketParams


@exact
def evaluate(
    profile: Profile,
    bucket: Bucket,
    markets: Mapping[str, MarketParams],
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
) -> BucketHealth:
    """The bucket's health at ``prices`` (every symbol of the bucket must be priced).

    Raises :class:`MissingPrice` for an unpriced symbol and :class:`MissingParameter` for a
    position in an unknown market or one without a maintenance schedule.
    """
    if profile.kind == "lending":
        t = lending_terms(profile, bucket, assets, prices)
        return BucketHealth(
            lending=True,
            equity=t.collateral_value,
            requirement=t.debt_value,
            health_factor=t.health_factor,
            liquidatable=lending_liquidatable(t),
            bankrupt=t.raw_collateral_value < t.debt_value,
        )
    p = perp_terms(profile, bucket, markets, assets, prices)
    hf = INF if p.requirement == 0 else p.equity / p.requirement
    return BucketHealth(
        lending=False,
        equity=p.equity,
        requirement=p.requirement,
        health_factor=hf,
        liquidatable=perp_liquidatable(profile, bucket, p.equity, p.requirement),
        bankrupt=p.equity < 0,
    )
