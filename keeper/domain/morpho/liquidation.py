"""Morpho Blue's health check and ``liquidate``, as the contract computes them, and the plan.

``accrue``: ``_accrueInterest`` at a block time (the IRM's rate from the latest block frame).
``healthy``: ``_isHealthy`` (``maxBorrow = wMulDown(mulDivDown(collateral, price, 1e36), lltv)``
against ``borrowed = toAssetsUp(borrowShares)``). ``liquidate``: ``Morpho.liquidate`` after the
accrual: the same inputs (seized assets, or repaid shares), the same outputs, the same reverts,
the bad-debt realisation included. ``plan``: what the keeper submits: a seizure that leaves the
position healthy (at ``target`` in WAD), found by binary search over ``liquidate`` itself: the
least one from which every larger seizure restores health too (``maxBorrow`` is rounded down
twice, so health is not monotone in the seizure to the unit: a few smaller seizures may restore
it as well; the plan may exceed the very least by a few collateral units, never by more); when no
partial seizure does, the whole debt by shares when the collateral covers it, else all the
collateral (the contract then realises the bad debt).

Every number is an integer in the contract's own units; nothing here rounds on its own.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from keeper.domain.morpho.mathlib import (
    ORACLE_PRICE_SCALE,
    WAD,
    liquidation_incentive_factor,
    mul_div_down,
    mul_div_up,
    to_assets_down,
    to_assets_up,
    to_shares_down,
    to_shares_up,
    w_div_up,
    w_mul_down,
    w_taylor_compounded,
    zero_floor_sub,
)
from keeper.domain.morpho.state import Market, Position

__all__ = [
    "ZERO_ADDRESS",
    "Accrual",
    "Plan",
    "Result",
    "Reverts",
    "Totals",
    "accrue",
    "borrowed",
    "health",
    "healthy",
    "liquidate",
    "max_borrow",
    "plan",
]

ZERO_ADDRESS = "0x" + "00" * 20


class Totals(NamedTuple):
    """A market's totals at one instant (after accrual)."""

    supply_assets: int
    supply_shares: int
    borrow_assets: int
    borrow_shares: int
    last_update: int


class Accrual(NamedTuple):
    totals: Totals
    interest: int
    fee_shares: int


class Reverts(Exception):
    """``liquidate`` would revert, with the contract's reason (``ErrorsLib``) or the panic."""


class Result(NamedTuple):
    """What ``liquidate`` does: the ``Liquidate`` event's amounts and the state after."""

    repaid_assets: int
    repaid_shares: int
    seized_assets: int
    bad_debt_assets: int
    bad_debt_shares: int
    totals: Totals
    position: Position


class Plan(NamedTuple):
    """A liquidation to submit: the call's inputs (exactly one non-zero), its expected result,
    the position's ``borrowed``/``max_borrow`` before, and why this size."""

    seized_assets: int
    repaid_shares: int
    result: Result
    borrowed: int
    max_borrow: int
    incentive: int
    why: str


def accrue(m: Market, now: int) -> Accrual:
    """``_accrueInterest`` at block time ``now`` with the market's latest IRM rate."""
    t = Totals(m.total_supply_assets, m.total_supply_shares, m.total_borrow_assets,
               m.total_borrow_shares, m.last_update)
    elapsed = now - m.last_update
    if elapsed <= 0:
        return Accrual(t, 0, 0)
    if m.irm == ZERO_ADDRESS:
        return Accrual(t._replace(last_update=now), 0, 0)
    interest = w_mul_down(t.borrow_assets, w_taylor_compounded(m.rate, elapsed))
    tba, tsa, tss = t.borrow_assets + interest, t.supply_assets + interest, t.supply_shares
    fee_shares = 0
    if m.fee != 0:
        fee_amount = w_mul_down(interest, m.fee)
        fee_shares = to_shares_down(fee_amount, tsa - fee_amount, tss)
        tss += fee_shares
    return Accrual(Totals(tsa, tss, tba, t.borrow_shares, now), interest, fee_shares)


def borrowed(pos: Position, t: Totals) -> int:
    return to_assets_up(pos.borrow_shares, t.borrow_assets, t.borrow_shares)


def max_borrow(collateral: int, price: int, lltv: int) -> int:
    return w_mul_down(mul_div_down(collateral, price, ORACLE_PRICE_SCALE), lltv)


def healthy(pos: Position, t: Totals, price: int, lltv: int) -> bool:
    """``_isHealthy``: no borrow shares, or ``maxBorrow >= borrowed``."""
    if pos.borrow_shares == 0:
        return True
    return max_borrow(pos.collateral, price, lltv) >= borrowed(pos, t)


def health(pos: Position, t: Totals, price: int, lltv: int) -> Fraction | None:
    """``maxBorrow / borrowed`` (``None``: no debt); liquidatable iff below 1."""
    owed = borrowed(pos, t)
    if pos.borrow_shares == 0 or owed == 0:
        return None
    return Fraction(max_borrow(pos.collateral, price, lltv), owed)


def liquidate(m: Market, pos: Position, t: Totals, price: int, *, seized_assets: int = 0,
              repaid_shares: int = 0) -> Result:
    """``Morpho.liquidate`` on accrued totals ``t``: its result, or ``Reverts``."""
    if (seized_assets == 0) == (repaid_shares == 0):
        raise Reverts("inconsistent input")
    if healthy(pos, t, price, m.lltv):
        raise Reverts("position is healthy")
    lif = liquidation_incentive_factor(m.lltv)
    tsa, _, tba, tbs, _ = t
    if seized_assets > 0:
        quoted = mul_div_up(seized_assets, price, ORACLE_PRICE_SCALE)
        repaid_shares = to_shares_up(w_div_up(quoted, lif), tba, tbs)
    else:
        if price == 0:
            raise Reverts("panic: division by zero (oracle price 0)")
        seized_assets = mul_div_down(w_mul_down(to_assets_down(repaid_shares, tba, tbs), lif),
                                     ORACLE_PRICE_SCALE, price)
    repaid_assets = to_assets_up(repaid_shares, tba, tbs)
    if repaid_shares > pos.borrow_shares or repaid_shares > tbs:
        raise Reverts("panic: arithmetic underflow (repaid shares exceed the borrow)")
    if seized_assets > pos.collateral:
        raise Reverts("panic: arithmetic underflow (seized assets exceed the collateral)")
    bs = pos.borrow_shares - repaid_shares
    tbs -= repaid_shares
    tba = zero_floor_sub(tba, repaid_assets)
    coll = pos.collateral - seized_assets
    bad_assets = bad_shares = 0
    if coll == 0:
        bad_shares = bs
        bad_assets = min(tba, to_assets_up(bad_shares, tba, tbs))
        tba -= bad_assets
        tsa -= bad_assets
        tbs -= bad_shares
        bs = 0
    return Result(repaid_assets, repaid_shares, seized_assets, bad_assets, bad_shares,
                  Totals(tsa, t.supply_shares, tba, tbs, t.last_update),
                  Position(borrow_shares=bs, collateral=coll))


def _restores(m: Market, pos: Position, t: Totals, price: int, *, target: int, seized: int) -> Result | None:
    try:
        r = liquidate(m, pos, t, price, seized_assets=seized)
    except Reverts:
        return None
    p = r.position
    if p.borrow_shares == 0:
        return r
    return r if max_borrow(p.collateral, price, m.lltv) * WAD >= borrowed(p, r.totals) * target else None


def _too_close(m: Market, pos: Position, t0: Totals, price: int, seized: int) -> bool:
    """Whether seizing ``seized`` at the verdict's totals ``t0`` repays every share or more."""
    lif = liquidation_incentive_factor(m.lltv)
    quoted = mul_div_up(seized, price, ORACLE_PRICE_SCALE)
    return to_shares_up(w_div_up(quoted, lif), t0.borrow_assets, t0.borrow_shares) >= pos.borrow_shares


def plan(m: Market, pos: Position, *, verdict_time: int, plan_time: int, target: int = WAD) -> Plan | None:
    """The liquidation to submit for ``pos`` in ``m`` at the market's latest price, or ``None``
    when the contract would find it healthy at ``verdict_time``.

    Sized on the totals accrued to ``plan_time`` (the latest time the transaction may land: more
    interest only makes the position worse, so a plan that restores health then restores it
    sooner too). ``target`` is the health (WAD) to restore; 1e18 is the contract's own line.
    """
    price = m.price
    if price <= 0 or pos.borrow_shares == 0 or pos.collateral == 0:
        return None  # no price yet; nothing owed; nothing to seize (no call can succeed)
    t0 = accrue(m, verdict_time).totals
    if healthy(pos, t0, price, m.lltv):
        return None
    t = accrue(m, max(plan_time, verdict_time)).totals
    owed, cap = borrowed(pos, t), max_borrow(pos.collateral, price, m.lltv)
    lif = liquidation_incentive_factor(m.lltv)
    if healthy(pos, t, price, m.lltv):  # cannot happen (interest only adds), kept as the guard
        return None
    # the most collateral that can be seized without repaying more shares than are owed
    lo, hi = 0, pos.collateral
    while lo < hi:
        mid = (lo + hi + 1) // 2
        quoted = mul_div_up(mid, price, ORACLE_PRICE_SCALE)
        if to_shares_up(w_div_up(quoted, lif), t.borrow_assets, t.borrow_shares) <= pos.borrow_shares:
            lo = mid
        else:
            hi = mid - 1
    s_max = lo
    if s_max > 0 and _restores(m, pos, t, price, target=target, seized=s_max) is not None:
        lo, hi = 1, s_max  # invariant: hi restores health
        while lo < hi:
            mid = (lo + hi) // 2
            if _restores(m, pos, t, price, target=target, seized=mid) is not None:
                hi = mid
            else:
                lo = mid + 1
        r = liquidate(m, pos, t, price, seized_assets=hi)
        if hi < pos.collateral and _too_close(m, pos, t0, price, hi):
            # the seizure repays (nearly) every share: landing sooner than ``plan_time`` (less
            # interest, more shares per asset) it could ask for more shares than are owed and
            # revert; repaying every share instead is exact whenever it lands
            try:
                by_shares = liquidate(m, pos, t, price, repaid_shares=pos.borrow_shares)
                return Plan(0, pos.borrow_shares, by_shares, owed, cap, lif,
                            "repay every borrow share: the least restoring seizure repays nearly all")
            except Reverts:
                pass
        if hi < pos.collateral:
            why = (f"seize the least collateral that restores health {Fraction(target, WAD)} "
                   f"(LIF {Fraction(lif, WAD)})")
        elif r.bad_debt_shares:
            why = "seize all the collateral: it does not cover the debt, the contract realises the bad debt"
        else:
            why = "seize all the collateral: it covers the whole debt"
        return Plan(hi, 0, r, owed, cap, lif, why)
    if s_max < pos.collateral:
        try:
            r = liquidate(m, pos, t, price, repaid_shares=pos.borrow_shares)
            return Plan(0, pos.borrow_shares, r, owed, cap, lif,
                        "repay every borrow share: no partial seizure restores health")
        except Reverts:
            pass
    r = liquidate(m, pos, t, price, seized_assets=pos.collateral)
    return Plan(pos.collateral, 0, r, owed, cap, lif,
                "seize all the collateral: it does not cover the debt, the contract realises the bad debt")
