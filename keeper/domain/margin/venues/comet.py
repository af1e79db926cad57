"""Compound III (Comet) absorb and buyCollateral quotes, in the venue's integers:
prices 1e8, factors 1e18 (``FACTOR_SCALE``), token scales ``10^decimals``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["FACTOR_SCALE", "Collateral", "absorb", "mul_factor", "quote_collateral"]

FACTOR_SCALE = 10**18


def mul_factor(n: int, factor: int) -> int:
    return n * factor // FACTOR_SCALE


def quote_collateral(
    *,
    asset_price: int,
    asset_scale: int,
    liquidation_factor: int,
    store_front_price_factor: int,
    base_price: int,
    base_scale: int,
    base_amount: int,
) -> int:
    """``quoteCollateral``: collateral (base units) bought for ``base_amount`` at the store-front
    discount ``storeFrontPriceFactor * (1 - liquidationFactor)``."""
    discount = mul_factor(store_front_price_factor, FACTOR_SCALE - liquidation_factor)
    discounted = mul_factor(asset_price, FACTOR_SCALE - discount)
    return base_price * base_amount * asset_scale // discounted // base_scale


class Collateral(NamedTuple):
    amount: int  # base units
    price: int  # 1e8
    scale: int  # 10^decimals
    liquidation_factor: int  # 1e18


def absorb(
    collateral: Sequence[Collateral], old_balance: int, base_price: int, base_scale: int
) -> tuple[int, int]:
    """``absorbInternal``: all collateral is seized and credited at its liquidation factor.
    Returns ``(new base balance, basePaidOut)``; a balance left negative is floored at zero
    (the reserves absorb the rest)."""
    delta_value = sum(mul_factor(c.amount * c.price // c.scale, c.liquidation_factor) for c in collateral)
    delta_balance = delta_value * base_scale // base_price
    new_balance = max(0, old_balance + delta_balance)
    return new_balance, new_balance - old_balance
