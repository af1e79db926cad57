"""Aave v3.0.2's account data and ``liquidationCall``, as the contracts compute them.

``account``: ``GenericLogic.calculateUserAccountData`` at a block time: each reserve's balance is
``scaled.rayMul(normalised income)`` (aToken) or ``scaled.rayMul(normalised debt)`` (variable
debt), valued ``floor(balance * price / 10^decimals)`` in the base currency; ``avgLT =
floor(Σ value_i * LT_i / Σ value_i)`` over the reserves used as collateral with a threshold;
``HF = wadDiv(percentMul(collateral, avgLT), debt)``. ``liquidation``: ``executeLiquidationCall``
for a (collateral, debt) pair and a ``debtToCover``: the close factor (50% of the reserve's debt
above HF 0.95, 100% at or below), ``_calculateAvailableCollateralToLiquidate`` (the bonus on the
collateral, the protocol fee out of the bonus, all the collateral when the bonus-inflated amount
exceeds it and the debt it buys), and the fee cut to the user's remaining scaled balance (the
contract's guard against a 1-wei imprecision). ``plan``: the keeper's choice: the largest debt
(base value) against the largest collateral, ties by address, the most the close factor allows.

Every number is an integer in the contracts' own units.
"""

from __future__ import annotations

from typing import NamedTuple

from keeper.domain.aave_v3.raymath import normalized_debt, normalized_income, ray_div, ray_mul, wad_div
from keeper.domain.aave_v3.state import AaveState, Reserve, User
from keeper.domain.margin.aave import (
    CLOSE_FACTOR_HF_THRESHOLD,
    DEFAULT_CLOSE_FACTOR,
    MAX_CLOSE_FACTOR,
    collateral_to_liquidate,
    percent_mul,
)

__all__ = [
    "HF_THRESHOLD",
    "MAX_UINT256",
    "Account",
    "Holding",
    "Indexes",
    "Result",
    "Reverts",
    "account",
    "decimals_of",
    "holdings",
    "indexes",
    "liquidation",
    "pick_pair",
    "plan",
]

HF_THRESHOLD = 10**18
MAX_UINT256 = (1 << 256) - 1


class Reverts(Exception):
    """``liquidationCall`` would revert: ``code`` is Aave's error code (``Errors.sol``)."""

    def __init__(self, code: str, name: str) -> None:
        super().__init__(f"{code} ({name})")
        self.code = code
        self.name = name


class Holding(NamedTuple):
    """One reserve of an account at a block time, in token units."""

    reserve: Reserve
    supplied: int
    debt: int
    collateral: bool
    """Used as collateral with a threshold: it counts in the health factor."""


class Account(NamedTuple):
    holdings: dict[str, Holding]
    total_collateral_base: int
    total_debt_base: int
    avg_threshold: int
    health_factor: int
    """WAD; ``2**256 - 1`` with no debt, as the contract says."""


Indexes = dict[str, tuple[int, int]]
"""asset -> (normalised income, normalised debt) at one block time: the same for every account,
so a scan of many accounts computes them once per reserve."""


def indexes(state: AaveState, asset: str, now: int, cache: Indexes | None = None) -> tuple[int, int]:
    """The reserve's normalised income and debt at ``now`` (through ``cache`` when given)."""
    if cache is not None and asset in cache:
        return cache[asset]
    r = state.reserves[asset]
    got = (normalized_income(r.liquidity_index, r.liquidity_rate, r.last_update, now),
           normalized_debt(r.variable_index, r.variable_rate, r.last_update, now))
    if cache is not None:
        cache[asset] = got
    return got


def holdings(state: AaveState, user: User, now: int, cache: Indexes | None = None) -> dict[str, Holding]:
    """The account's balances at block time ``now``, by asset."""
    out: dict[str, Holding] = {}
    for asset in sorted({*user.supplied, *user.borrowed}):
        r = state.reserves[asset]
        income, debt_index = indexes(state, asset, now, cache)
        supplied = user.supplied.get(asset, 0)
        if supplied:
            supplied = ray_mul(supplied, income)
        debt = user.borrowed.get(asset, 0)
        if debt:
            debt = ray_mul(debt, debt_index)
        out[asset] = Holding(r, supplied, debt, asset in user.collateral and r.threshold != 0)
    return out


def decimals_of(state: AaveState, asset: str) -> int:
    return state.decimals.get(asset, 18)


def account(state: AaveState, user: User, now: int, cache: Indexes | None = None) -> Account:
    """``calculateUserAccountData`` (v3.0.2) at ``now`` with the reserves' frame prices."""
    hs = holdings(state, user, now, cache)
    coll = debt = weighted = 0
    for asset, h in hs.items():
        unit = 10 ** decimals_of(state, asset)
        if h.collateral:
            value = h.supplied * h.reserve.price // unit
            coll += value
            weighted += value * h.reserve.threshold
        if h.debt:
            debt += h.reserve.price * h.debt // unit
    avg = weighted // coll if coll else 0
    hf = MAX_UINT256 if debt == 0 else wad_div(percent_mul(coll, avg), debt)
    return Account(hs, coll, debt, avg, hf)


class Result(NamedTuple):
    """What ``liquidationCall`` does: the ``LiquidationCall`` event's amounts and the fee."""

    collateral_asset: str
    debt_asset: str
    debt_covered: int
    collateral_to_liquidator: int
    protocol_fee: int
    close_factor: int
    health_factor: int


def liquidation(state: AaveState, user: User, now: int, *, collateral: str, debt: str,
                debt_to_cover: int) -> Result:
    """``executeLiquidationCall(collateral, debt, user, debtToCover, receiveAToken=false)``."""
    acct = account(state, user, now)
    c_res, d_res = state.reserves.get(collateral), state.reserves.get(debt)
    if c_res is None or d_res is None:
        raise Reverts("27", "RESERVE_INACTIVE")  # an unknown asset has no active reserve
    hs = acct.holdings
    owed = hs[debt].debt if debt in hs else 0
    cf = DEFAULT_CLOSE_FACTOR if acct.health_factor > CLOSE_FACTOR_HF_THRESHOLD else MAX_CLOSE_FACTOR
    actual = min(debt_to_cover, percent_mul(owed, cf))
    if not (c_res.active and d_res.active):
        raise Reverts("27", "RESERVE_INACTIVE")
    if c_res.paused or d_res.paused:
        raise Reverts("29", "RESERVE_PAUSED")
    if acct.health_factor >= HF_THRESHOLD:
        raise Reverts("45", "HEALTH_FACTOR_NOT_BELOW_THRESHOLD")
    if c_res.threshold == 0 or collateral not in user.collateral:
        raise Reverts("46", "COLLATERAL_CANNOT_BE_LIQUIDATED")
    if owed == 0:
        raise Reverts("47", "SPECIFIED_CURRENCY_NOT_BORROWED_BY_USER")
    balance = hs[collateral].supplied if collateral in hs else 0
    s = collateral_to_liquidate(
        debt_to_cover=actual, debt_price8=d_res.price, debt_decimals=decimals_of(state, debt),
        collateral_balance=balance, collateral_price8=c_res.price,
        collateral_decimals=decimals_of(state, collateral), bonus_bps=c_res.bonus,
        protocol_fee_bps=c_res.protocol_fee)
    to_liquidator = s.collateral_units - s.protocol_fee_units
    if s.debt_units == 0 or to_liquidator == 0:
        # the debt token's (or the aToken's) burn of nothing: ``_burnScaled`` requires a non-zero
        # scaled amount
        raise Reverts("25", "INVALID_BURN_AMOUNT")
    fee = s.protocol_fee_units
    if fee:
        # the collateral's index at ``now``: the aTokens burnt for the liquidator, then the fee
        # cut to what scaled balance is left ("1 wei imprecision" guard of v3.0)
        index = normalized_income(c_res.liquidity_index, c_res.liquidity_rate, c_res.last_update, now)
        left = user.supplied.get(collateral, 0) - ray_div(to_liquidator, index)
        if ray_div(fee, index) > left:
            fee = ray_mul(left, index)
    return Result(collateral, debt, s.debt_units, to_liquidator, fee, cf, acct.health_factor)


def pick_pair(state: AaveState, acct: Account) -> tuple[str, str] | None:
    """(collateral, debt): the largest collateral and the largest debt by base value, ties by
    address (the lending half of the keeper's cross-bucket rule)."""
    colls, debts = [], []
    for asset, h in acct.holdings.items():
        unit = 10 ** decimals_of(state, asset)
        if h.collateral and h.supplied:
            colls.append((-(h.supplied * h.reserve.price // unit), asset))
        if h.debt:
            debts.append((-(h.reserve.price * h.debt // unit), asset))
    if not colls or not debts:
        return None
    return min(colls)[1], min(debts)[1]


def plan(state: AaveState, user: User, now: int) -> Result | None:
    """The liquidation the keeper submits at ``now``, or None (healthy, or nothing to seize)."""
    acct = account(state, user, now)
    if acct.health_factor >= HF_THRESHOLD:
        return None
    pair = pick_pair(state, acct)
    if pair is None:
        return None
    collateral, debt = pair
    try:
        return liquidation(state, user, now, collateral=collateral, debt=debt, debt_to_cover=MAX_UINT256)
    except Reverts:
        return None
