"""Morpho Blue's ``MathLib``, ``SharesMathLib`` and constants, in Python integers.

Each function is the Solidity one of the same name (``src/libraries/MathLib.sol``,
``SharesMathLib.sol``, ``ConstantsLib.sol``); Python's ``//`` on non-negative integers is
Solidity's truncating division. Overflow (a product past 2**256) reverts on chain; it cannot
happen for amounts the contract accepted (``uint128`` balances), so it is not modelled.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "LIQUIDATION_CURSOR",
    "MAX_LIQUIDATION_INCENTIVE_FACTOR",
    "ORACLE_PRICE_SCALE",
    "VIRTUAL_ASSETS",
    "VIRTUAL_SHARES",
    "WAD",
    "liquidation_incentive_factor",
    "mul_div_down",
    "mul_div_up",
    "to_assets_down",
    "to_assets_up",
    "to_shares_down",
    "to_shares_up",
    "w_div_down",
    "w_div_up",
    "w_mul_down",
    "w_taylor_compounded",
    "zero_floor_sub",
]

WAD: Final = 10**18
ORACLE_PRICE_SCALE: Final = 10**36
LIQUIDATION_CURSOR: Final = 3 * 10**17  # 0.3e18
MAX_LIQUIDATION_INCENTIVE_FACTOR: Final = 115 * 10**16  # 1.15e18
VIRTUAL_SHARES: Final = 10**6
VIRTUAL_ASSETS: Final = 1


def mul_div_down(x: int, y: int, d: int) -> int:
    return (x * y) // d


def mul_div_up(x: int, y: int, d: int) -> int:
    return (x * y + (d - 1)) // d


def w_mul_down(x: int, y: int) -> int:
    return mul_div_down(x, y, WAD)


def w_div_down(x: int, y: int) -> int:
    return mul_div_down(x, WAD, y)


def w_div_up(x: int, y: int) -> int:
    return mul_div_up(x, WAD, y)


def w_taylor_compounded(x: int, n: int) -> int:
    """``e^(x*n) - 1`` to the third Taylor term, as the contract computes it."""
    first = x * n
    second = mul_div_down(first, first, 2 * WAD)
    third = mul_div_down(second, first, 3 * WAD)
    return first + second + third


def to_shares_down(assets: int, total_assets: int, total_shares: int) -> int:
    return mul_div_down(assets, total_shares + VIRTUAL_SHARES, total_assets + VIRTUAL_ASSETS)


def to_shares_up(assets: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(assets, total_shares + VIRTUAL_SHARES, total_assets + VIRTUAL_ASSETS)


def to_assets_down(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_down(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def to_assets_up(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def zero_floor_sub(x: int, y: int) -> int:
    return x - y if x > y else 0


def liquidation_incentive_factor(lltv: int) -> int:
    """``min(MAX_LIQUIDATION_INCENTIVE_FACTOR, WAD.wDivDown(WAD - LIQUIDATION_CURSOR.wMulDown(WAD - lltv)))``:
    rounded down to the wad, as ``Morpho.liquidate`` computes it."""
    return min(MAX_LIQUIDATION_INCENTIVE_FACTOR,
               w_div_down(WAD, WAD - w_mul_down(LIQUIDATION_CURSOR, WAD - lltv)))
