"""Aave v3 integer math: token base units, 8-decimal prices, half-up percent and wad division.

This reproduces aave-v3-core's ``GenericLogic.calculateUserAccountData`` and
``LiquidationLogic._calculateAvailableCollateralToLiquidate`` bit for bit (the SparkLend test
suite's numbers): values in base currency are ``floor(amount * price / 10^decimals)``,
``avgLT = floor(Σ v_i * LT_i / Σ v_i)``, ``HF = wadDiv(percentMul(collateral, avgLT), debt)``.
``percentMul``, ``percentDiv`` and ``wadDiv`` round half-up. v3.3's close factor and dust rules
are in :func:`max_debt_v33` and :func:`leaves_dust`.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import NamedTuple

__all__ = [
    "CLOSE_FACTOR_HF_THRESHOLD",
    "DEFAULT_CLOSE_FACTOR",
    "HALF_PERCENT",
    "MAX_CLOSE_FACTOR",
    "PERCENTAGE_FACTOR",
    "WAD",
    "AccountData",
    "Reserve",
    "Seizure",
    "account_data",
    "base_value",
    "close_factor_v30",
    "collateral_to_liquidate",
    "from_units",
    "leaves_dust",
    "max_debt_v33",
    "percent_div",
    "percent_mul",
    "to_bps",
    "to_price8",
    "to_units",
    "wad_div",
]

WAD = 10**18
PERCENTAGE_FACTOR = 10_000
HALF_PERCENT = 5_000
CLOSE_FACTOR_HF_THRESHOLD = 95 * 10**16  # 0.95e18
DEFAULT_CLOSE_FACTOR = 5_000
MAX_CLOSE_FACTOR = 10_000


def percent_mul(value: int, pct: int) -> int:
    """``value * pct / 1e4`` rounded half-up (``PercentageMath.percentMul``)."""
    return (value * pct + HALF_PERCENT) // PERCENTAGE_FACTOR


def percent_div(value: int, pct: int) -> int:
    """``value * 1e4 / pct`` rounded half-up (``PercentageMath.percentDiv``)."""
    return (value * PERCENTAGE_FACTOR + pct // 2) // pct


def wad_div(a: int, b: int) -> int:
    """``a * 1e18 / b`` rounded half-up (``WadRayMath.wadDiv``)."""
    return (a * WAD + b // 2) // b


def to_units(amount: Decimal, decimals: int, *, up: bool = False) -> int:
    """A token amount in base units; a fraction of a unit is floored (``up``: ceiled)."""
    return int(amount.scaleb(decimals).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR))


def from_units(units: int, decimals: int) -> Decimal:
    return Decimal(units).scaleb(-decimals)


def to_price8(price: Decimal) -> int:
    """An oracle price in 1e8 USD units (Aave's base currency), rounded half-up."""
    return int(price.scaleb(8).to_integral_value(rounding=ROUND_HALF_UP))


def to_bps(fraction: Decimal) -> int:
    """A fraction as basis points (``0.5`` -> 5000), rounded half-up."""
    return int((fraction * PERCENTAGE_FACTOR).to_integral_value(rounding=ROUND_HALF_UP))


def base_value(units: int, price8: int, decimals: int) -> int:
    """``floor(units * price / 10^decimals)``: a balance's value in base currency (1e8 USD)."""
    value: int = units * price8 // 10**decimals
    return value


class Reserve(NamedTuple):
    """One of the user's reserves in integer form."""

    symbol: str
    units: int  # > 0 collateral, < 0 debt
    price8: int
    decimals: int
    lt_bps: int


class AccountData(NamedTuple):
    total_collateral_base: int
    total_debt_base: int
    avg_lt_bps: int
    health_factor_wad: int | None  # None: no debt (type(uint256).max on chain)


def account_data(reserves: list[Reserve]) -> AccountData:
    """``calculateUserAccountData``: collateral counts only where LT != 0."""
    coll = debt = weighted = 0
    for r in reserves:
        if r.units > 0 and r.lt_bps != 0:
            v = base_value(r.units, r.price8, r.decimals)
            coll += v
            weighted += v * r.lt_bps
        elif r.units < 0:
            debt += base_value(-r.units, r.price8, r.decimals)
    avg_lt = weighted // coll if coll else 0
    hf = None if debt == 0 else wad_div(percent_mul(coll, avg_lt), debt)
    return AccountData(coll, debt, avg_lt, hf)


class Seizure(NamedTuple):
    debt_units: int
    collateral_units: int  # all taken from the user, protocol fee included
    protocol_fee_units: int


def collateral_to_liquidate(
    *,
    debt_to_cover: int,
    debt_price8: int,
    debt_decimals: int,
    collateral_balance: int,
    collateral_price8: int,
    collateral_decimals: int,
    bonus_bps: int,
    protocol_fee_bps: int,
) -> Seizure:
    """``_calculateAvailableCollateralToLiquidate`` (v3.0): collateral for ``debt_to_cover``.

    When the bonus-inflated collateral exceeds the balance, the whole balance is taken and the
    debt repaid shrinks to what it buys (``percentDiv`` by the bonus). The protocol fee is
    ``percentMul(coll - percentDiv(coll, bonus), fee)``, out of the bonus part.
    """
    base_collateral = (debt_price8 * debt_to_cover * 10**collateral_decimals) // (
        collateral_price8 * 10**debt_decimals
    )
    max_collateral = percent_mul(base_collateral, bonus_bps)
    if max_collateral > collateral_balance:
        coll = collateral_balance
        debt = percent_div(
            (collateral_price8 * coll * 10**debt_decimals) // (debt_price8 * 10**collateral_decimals),
            bonus_bps,
        )
    else:
        coll = max_collateral
        debt = debt_to_cover
    fee = 0
    if protocol_fee_bps != 0:
        bonus_collateral = coll - percent_div(coll, bonus_bps)
        fee = percent_mul(bonus_collateral, protocol_fee_bps)
    return Seizure(debt, coll, fee)


def close_factor_v30(health_factor_wad: int) -> int:
    """v3.0-3.2: 50% above HF 0.95, else 100% (bps), applied to the reserve's debt."""
    return DEFAULT_CLOSE_FACTOR if health_factor_wad > CLOSE_FACTOR_HF_THRESHOLD else MAX_CLOSE_FACTOR


def max_debt_v33(
    *,
    health_factor_wad: int,
    total_debt_base: int,
    reserve_debt_units: int,
    reserve_debt_base: int,
    reserve_collateral_base: int,
    debt_price8: int,
    debt_decimals: int,
    min_base_threshold: int,
) -> tuple[int, int]:
    """v3.3: ``(max debt units, close factor bps)``.

    50% of the user's TOTAL debt (base currency), capped at the reserve's debt, only when the
    reserve's collateral and debt are both at least ``min_base_threshold`` and HF > 0.95;
    otherwise the whole reserve debt.
    """
    if (
        reserve_collateral_base >= min_base_threshold
        and reserve_debt_base >= min_base_threshold
        and health_factor_wad > CLOSE_FACTOR_HF_THRESHOLD
    ):
        half = percent_mul(total_debt_base, DEFAULT_CLOSE_FACTOR)
        if reserve_debt_base > half:
            return half * 10**debt_decimals // debt_price8, DEFAULT_CLOSE_FACTOR
        return reserve_debt_units, DEFAULT_CLOSE_FACTOR
    return reserve_debt_units, MAX_CLOSE_FACTOR


def leaves_dust(
    *,
    seizure: Seizure,
    reserve_debt_units: int,
    debt_price8: int,
    debt_decimals: int,
    collateral_balance: int,
    collateral_price8: int,
    collateral_decimals: int,
    min_leftover_base: int,
) -> bool:
    """v3.3 ``MustNotLeaveDust``: a partial liquidation leaving under the minimum on either side."""
    if seizure.debt_units >= reserve_debt_units or seizure.collateral_units >= collateral_balance:
        return False
    debt_left = base_value(reserve_debt_units - seizure.debt_units, debt_price8, debt_decimals)
    coll_left = base_value(
        collateral_balance - seizure.collateral_units, collateral_price8, collateral_decimals
    )
    return debt_left < min_leftover_base or coll_left < min_leftover_base
