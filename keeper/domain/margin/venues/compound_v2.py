"""Compound v2 ``liquidateCalculateSeizeTokens`` with the Exp mantissa math (1e18, truncating)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

__all__ = ["EXP_SCALE", "mantissa", "seize_tokens"]

EXP_SCALE = 10**18


def mantissa(x: Decimal) -> int:
    """A decimal as an Exp mantissa (1e18), truncated."""
    return int((x * EXP_SCALE).to_integral_value(rounding=ROUND_DOWN))


def seize_tokens(
    *, repay_amount: int, incentive: int, price_borrowed: int, price_collateral: int, exchange_rate: int
) -> int:
    """cTokens seized for ``repay_amount`` (underlying base units); every argument but the
    amount is a 1e18 mantissa. ``ratio = (incentive*pB) / (pC*rate)``; ``seize = ratio*repay``."""
    numerator = incentive * price_borrowed // EXP_SCALE
    denominator = price_collateral * exchange_rate // EXP_SCALE
    ratio = numerator * EXP_SCALE // denominator
    return ratio * repay_amount // EXP_SCALE
