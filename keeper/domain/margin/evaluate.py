"""``evaluate``: one bucket's health under one profile (dispatch to the perp or lending model)."""

from __future__ import annotations

from decimal import Decimal

from keeper.domain.margin.health import health_of
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.types import BucketHealth, exact
from keeper.domain.margin.venues import marginfi, vertex
from keeper.domain.model import Bucket

__all__ = ["evaluate", "weighted_health"]


@exact
def evaluate(pricing: Pricing, bucket: Bucket) -> BucketHealth:
    """The bucket's health at ``pricing.prices`` (every symbol of the bucket must be priced).

    Raises :class:`MissingPrice` for an unpriced symbol and :class:`MissingParameter` for a
    position in an unknown market or one without a maintenance schedule.
    """
    return health_of(pricing, bucket)


@exact
def weighted_health(pricing: Pricing, bucket: Bucket) -> dict[str, Decimal] | None:
    """The venue's own health numbers where it publishes them (MarginFi: ``initial``,
    ``maintenance``, ``equity``; Vertex: ``initial``, ``maintenance``, ``unweighted``), each
    ``weighted assets - weighted liabilities``; ``initial`` only where every balance has its
    initial weights. None for the other models."""
    if pricing.profile.model == "marginfi":
        return marginfi.report(pricing, bucket)
    if pricing.profile.model == "vertex":
        return vertex.report(pricing, bucket)
    return None
