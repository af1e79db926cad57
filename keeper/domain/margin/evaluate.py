"""``evaluate``: one bucket's health under one profile (dispatch to the perp or lending model)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from keeper.domain.margin.health import health_of
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import NO_EXTRAS, BucketHealth, Extras, exact
from keeper.domain.margin.venues import marginfi, vertex
from keeper.domain.model import AssetParams, Bucket, MarketParams


@exact
def evaluate(
    profile: Profile,
    bucket: Bucket,
    markets: Mapping[str, MarketParams],
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
    *,
    extras: Extras | None = None,
) -> BucketHealth:
    """The bucket's health at ``prices`` (every symbol of the bucket must be priced).

    ``extras``: what some venues read beyond market and asset parameters (``types.Extras``).
    Raises :class:`MissingPrice` for an unpriced symbol and :class:`MissingParameter` for a
    position in an unknown market or one without a maintenance schedule.
    """
    return health_of(profile, bucket, markets, assets, prices, extras)


@exact
def weighted_health(
    profile: Profile,
    bucket: Bucket,
    markets: Mapping[str, MarketParams],
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
    *,
    extras: Extras | None = None,
) -> dict[str, Decimal] | None:
    """The venue's own health numbers where it publishes them (MarginFi: ``initial``,
    ``maintenance``, ``equity``; Vertex: ``initial``, ``maintenance``, ``unweighted``), each
    ``weighted assets - weighted liabilities``; ``initial`` only where every balance has its
    initial weights. None for the other models."""
    x = extras or NO_EXTRAS
    if profile.model == "marginfi":
        return marginfi.report(profile, bucket, assets, prices, x)
    if profile.model == "vertex":
        return vertex.report(bucket, markets, assets, prices, x)
    return None
