"""Lending buckets: threshold-weighted collateral value, debt value, health factor.

Positive balances are collateral, negative ones debt. Per model:

* ``aave``: the venue's integer math (``aave.py``): HF is the on-chain wad, collateral value
  ``percentMul(Σ v_i, avgLT)`` and debt ``Σ v_j`` in 1e8 USD; liquidatable iff HF < 1.
* ``comet``: ``Σ collateral·price·liquidateCollateralFactor`` (given as
  ``liquidation_threshold``) against the base borrow; liquidatable iff liquidity < 0.
* ``compound-v2``: the same with one collateral factor, each market's value truncated to
  1e-18 USD as the Exp mantissa math does; liquidatable iff shortfall > 0.
* ``marginfi``: ``venues/marginfi.py`` (maintenance-weighted assets and liabilities on
  confidence-biased prices; the unweighted "equity" values for bankruptcy).
* ``morpho``: the contract's own integer rule (``keeper.domain.morpho``) on a bucket of one
  collateral and one loan asset: collateral floored and debt ceiled to token units, the oracle
  price ``floor(P_coll / P_loan · 10^(36 + loan decimals − collateral decimals))``,
  ``maxBorrow = wMulDown(mulDivDown(collateral, price, 1e36), LLTV)``; liquidatable iff the debt
  exceeds it. Any other shape of bucket falls back to ``collateral·price·LLTV`` in ``Decimal``.

An asset with no (or a zero) ``liquidation_threshold`` is not collateral.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import NamedTuple

from keeper.domain.margin import aave
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import INF, ONE, ZERO, price_of
from keeper.domain.margin.venues import marginfi
from keeper.domain.model import AssetParams, Bucket
from keeper.domain.morpho.liquidation import max_borrow

__all__ = ["LendingTerms", "MorphoUnits", "aave_reserves", "decimals_of", "lending_liquidatable",
           "lending_terms", "morpho_units", "threshold"]

_ATTO = Decimal("1e-18")


class MorphoUnits(NamedTuple):
    """A Morpho market bucket in the contract's integers (``morpho_units``)."""

    collateral: str
    loan: str | None
    collateral_units: int
    debt_units: int
    price36: int
    lltv: int
    collateral_decimals: int
    loan_decimals: int


def morpho_units(pricing: Pricing, bucket: Bucket) -> MorphoUnits | None:
    """The bucket as one Morpho position (``None`` unless it holds exactly one collateral with
    an LLTV and at most one debt)."""
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    colls = [s for s, b in bucket.balances.items() if b > 0 and threshold(assets, s) > 0]
    debts = [s for s, b in bucket.balances.items() if b < 0]
    if len(colls) != 1 or len(debts) > 1:
        return None
    c = colls[0]
    d = debts[0] if debts else None
    dc = decimals_of(profile, assets, c)
    dd = decimals_of(profile, assets, d) if d is not None else dc
    coll_units = int(bucket.balances[c].scaleb(dc).to_integral_value(rounding=ROUND_DOWN))
    debt_units = 0
    if d is not None:
        debt_units = int((-bucket.balances[d]).scaleb(dd).to_integral_value(rounding=ROUND_CEILING))
    p_loan = price_of(prices, d) if d is not None else ONE
    price36 = int((price_of(prices, c) / p_loan).scaleb(36 + dd - dc).to_integral_value(rounding=ROUND_DOWN))
    lltv = int(threshold(assets, c).scaleb(18).to_integral_value(rounding=ROUND_DOWN))
    return MorphoUnits(c, d, coll_units, debt_units, price36, lltv, dc, dd)


def _morpho_terms(u: MorphoUnits, prices: Mapping[str, Decimal], raw: Decimal) -> LendingTerms:
    cap = max_borrow(u.collateral_units, u.price36, u.lltv)
    p_loan = price_of(prices, u.loan) if u.loan is not None else ONE
    coll = Decimal(cap).scaleb(-u.loan_decimals) * p_loan
    debt = Decimal(u.debt_units).scaleb(-u.loan_decimals) * p_loan
    if u.debt_units == 0:
        hf = INF
    else:
        hf = Decimal(cap) / Decimal(u.debt_units)
        if cap < u.debt_units and hf >= 1:  # a ratio a unit under 1 that the context rounded up
            hf = ONE.next_minus()
    return LendingTerms(coll, debt, raw, hf, ZERO, ZERO, ZERO)


class LendingTerms(NamedTuple):
    collateral_value: Decimal  # threshold-weighted
    debt_value: Decimal
    raw_collateral_value: Decimal  # unweighted, collateral assets only
    health_factor: Decimal
    d_collateral: Decimal  # derivatives in the price of ``wrt``
    d_debt: Decimal
    d_raw_collateral: Decimal
    raw_debt_value: Decimal | None = None  # unweighted where the debt is weighted (MarginFi)
    d_raw_debt: Decimal = ZERO


def threshold(assets: Mapping[str, AssetParams], symbol: str) -> Decimal:
    a = assets.get(symbol)
    if a is None or a.liquidation_threshold is None:
        return ZERO
    return a.liquidation_threshold


def decimals_of(profile: Profile, assets: Mapping[str, AssetParams], symbol: str) -> int:
    a = assets.get(symbol)
    if a is None or a.decimals is None:
        return profile.default_decimals
    return a.decimals


def aave_reserves(pricing: Pricing, bucket: Bucket) -> list[aave.Reserve]:
    """The bucket's balances in Aave's integer form (collateral floored, debt ceiled to units)."""
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    out: list[aave.Reserve] = []
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        dec = decimals_of(profile, assets, sym)
        units = aave.to_units(bal, dec) if bal >= 0 else -aave.to_units(-bal, dec, up=True)
        out.append(
            aave.Reserve(
                sym, units, aave.to_price8(price_of(prices, sym)), dec, aave.to_bps(threshold(assets, sym))
            )
        )
    return out


def _ratio(coll: Decimal, debt: Decimal) -> Decimal:
    return INF if debt == 0 else coll / debt


def lending_terms(pricing: Pricing, bucket: Bucket, wrt: str | None = None) -> LendingTerms:
    """Collateral and debt values of a lending bucket (see the module docstring)."""
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    if profile.model == "marginfi":
        m = marginfi.values(pricing, bucket, "maintenance", wrt)
        e = marginfi.values(pricing, bucket, "equity", wrt)
        return LendingTerms(m.assets, m.liabilities, e.assets, _ratio(m.assets, m.liabilities),
                            m.d_assets, m.d_liabilities, e.d_assets, e.liabilities, e.d_liabilities)
    if profile.model == "aave" and wrt is None:
        data = aave.account_data(aave_reserves(pricing, bucket))
        coll = Decimal(aave.percent_mul(data.total_collateral_base, data.avg_lt_bps)).scaleb(-8)
        debt = Decimal(data.total_debt_base).scaleb(-8)
        raw = Decimal(data.total_collateral_base).scaleb(-8)
        hf = INF if data.health_factor_wad is None else Decimal(data.health_factor_wad).scaleb(-18)
        return LendingTerms(coll, debt, raw, hf, ZERO, ZERO, ZERO)
    if profile.model == "morpho" and wrt is None:
        u = morpho_units(pricing, bucket)
        if u is not None:
            raw = sum((b * price_of(prices, s) for s, b in bucket.balances.items()
                       if b > 0 and threshold(assets, s) > 0), ZERO)
            return _morpho_terms(u, prices, raw)
    coll = debt = raw = d_coll = d_debt = d_raw = ZERO
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        if bal > 0:
            lt = threshold(assets, sym)
            if lt == 0:
                continue
            v = bal * px * lt
            if profile.model == "compound-v2":
                v = v.quantize(_ATTO, rounding=ROUND_DOWN)
            coll += v
            raw += bal * px
            if sym == wrt:
                d_coll += bal * lt
                d_raw += bal
        elif bal < 0:
            v = -bal * px
            if profile.model == "compound-v2":
                v = v.quantize(_ATTO, rounding=ROUND_DOWN)
            debt += v
            if sym == wrt:
                d_debt += -bal
    return LendingTerms(coll, debt, raw, _ratio(coll, debt), d_coll, d_debt, d_raw)


def lending_liquidatable(terms: LendingTerms) -> bool:
    """HF < 1 (Aave), liquidity < 0 (Comet), shortfall > 0 (Compound v2), borrowed > max (Morpho)."""
    return terms.debt_value > 0 and terms.health_factor < 1
