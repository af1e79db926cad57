"""The pure margin engine: bucket health, liquidation and bankruptcy prices, liquidation sizing,
for perpetual and lending venues, each venue's conventions held in a :class:`Profile`.

Public API (pinned; see docs/margin.md)::

    pricing = Pricing(profile, markets, assets, prices, extras=NO_EXTRAS)
    evaluate(pricing, bucket) -> BucketHealth
    liquidation_price(pricing, bucket, market) -> Decimal | None
    bankruptcy_price(pricing, bucket, market) -> Decimal | None
    plan_liquidation(pricing, bucket, request=None, *, health=None) -> LiquidationPlan | None
    weighted_health(pricing, bucket) -> dict[str, Decimal] | None

A :class:`Pricing` holds what every function reads besides the bucket: the profile, the markets'
and assets' parameters, the prices and the ``Extras`` (what MarginFi, Vertex and Aevo read beyond
market and asset parameters: oracle confidence, initial weights, spreads, options).

No I/O, no clock, no randomness: every function is a function of its arguments.
"""

from __future__ import annotations

from keeper.domain.margin.evaluate import evaluate, weighted_health
from keeper.domain.margin.lending_sizing import pick_pair
from keeper.domain.margin.prices import bankruptcy_price, liquidation_price
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import PROFILE_NAMES, Profile, SizingPolicy, get_profile, with_policy
from keeper.domain.margin.sizing import pick_position, plan_liquidation
from keeper.domain.margin.types import (
    NO_EXTRAS,
    BucketHealth,
    Extras,
    LiquidationPlan,
    LiquidationRequest,
    MissingParameter,
    MissingPrice,
    OptionSpec,
    OracleRefused,
    PerpWeights,
    UnknownProfile,
)

__all__ = [
    "NO_EXTRAS",
    "PROFILE_NAMES",
    "BucketHealth",
    "Extras",
    "LiquidationPlan",
    "LiquidationRequest",
    "MissingParameter",
    "MissingPrice",
    "OptionSpec",
    "OracleRefused",
    "PerpWeights",
    "Pricing",
    "Profile",
    "SizingPolicy",
    "UnknownProfile",
    "bankruptcy_price",
    "evaluate",
    "get_profile",
    "liquidation_price",
    "pick_pair",
    "pick_position",
    "plan_liquidation",
    "weighted_health",
    "with_policy",
]
