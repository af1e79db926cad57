"""``WadRayMath`` and ``MathUtils`` of Aave v3.0.2 in Python integers, and the reserves'
normalised income and debt (``ReserveLogic.getNormalizedIncome``/``getNormalizedDebt``).

``//`` on non-negative integers is Solidity's division; the contracts' ``unchecked`` divisions
are the same. Overflow checks (a revert on chain) are not modelled: amounts the pool accepted
cannot reach them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HALF_RAY",
    "HALF_WAD",
    "RAY",
    "SECONDS_PER_YEAR",
    "WAD",
    "compounded_interest",
    "linear_interest",
    "normalized_debt",
    "normalized_income",
    "ray_div",
    "ray_mul",
    "wad_div",
]

WAD: Final = 10**18
HALF_WAD: Final = WAD // 2
RAY: Final = 10**27
HALF_RAY: Final = RAY // 2
SECONDS_PER_YEAR: Final = 365 * 86_400


def ray_mul(a: int, b: int) -> int:
    """``(a * b + HALF_RAY) / RAY``: half up."""
    return (a * b + HALF_RAY) // RAY


def ray_div(a: int, b: int) -> int:
    """``(a * RAY + b / 2) / b``: half up."""
    return (a * RAY + b // 2) // b


def wad_div(a: int, b: int) -> int:
    """``(a * WAD + b / 2) / b``: half up."""
    return (a * WAD + b // 2) // b


def linear_interest(rate: int, last_update: int, now: int) -> int:
    """``calculateLinearInterest``: ``RAY + rate * elapsed / SECONDS_PER_YEAR``."""
    return RAY + rate * (now - last_update) // SECONDS_PER_YEAR


def compounded_interest(rate: int, last_update: int, now: int) -> int:
    """``calculateCompoundedInterest``: the binomial approximation to the third term."""
    exp = now - last_update
    if exp == 0:
        return RAY
    exp_minus_one = exp - 1
    exp_minus_two = exp - 2 if exp > 2 else 0
    base_power_two = ray_mul(rate, rate) // (SECONDS_PER_YEAR * SECONDS_PER_YEAR)
    base_power_three = ray_mul(base_power_two, rate) // SECONDS_PER_YEAR
    second = exp * exp_minus_one * base_power_two // 2
    third = exp * exp_minus_one * exp_minus_two * base_power_three // 6
    return RAY + rate * exp // SECONDS_PER_YEAR + second + third


def normalized_income(liquidity_index: int, liquidity_rate: int, last_update: int, now: int) -> int:
    """``getNormalizedIncome`` at block time ``now``."""
    if last_update == now:
        return liquidity_index
    return ray_mul(linear_interest(liquidity_rate, last_update, now), liquidity_index)


def normalized_debt(variable_index: int, variable_rate: int, last_update: int, now: int) -> int:
    """``getNormalizedDebt`` at block time ``now``."""
    if last_update == now:
        return variable_index
    return ray_mul(compounded_interest(variable_rate, last_update, now), variable_index)
