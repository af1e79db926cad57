"""Venue-specific formulas the shared engine does not need for health but a keeper needs to
price and check a liquidation on that venue (dYdX fills, Drift transfers, Mango health,
Comet absorb and quotes, Compound v2 seize), each in the venue's own units and rounding."""

__all__: list[str] = []
