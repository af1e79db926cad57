"""``evaluate``: one bucket's health under one profile (dispatch to the perp or lending model)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from keeper.domain.margin.health import health_of
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import BucketHealth, exact
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
    return health_of(profile, bucket, markets, assets, prices)
