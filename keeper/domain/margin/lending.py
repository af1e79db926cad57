"""Lending buckets: threshold-weighted collateral value, debt value, health factor.

Positive balances are collateral, negative ones debt. Per model:

* ``aave``: the venue's integer math (``aave.py``): HF is the on-chain wad, collateral value
  ``percentMul(Σ v_i, avgLT)`` and debt ``Σ v_j`` in 1e8 USD; liquidatable iff HF < 1.
* ``comet``: ``Σ collateral·price·liquidateCollateralFactor`` (given as
  ``liquidation_threshold``) against the base borrow; liquidatable iff liquidity < 0.
* ``compound-v2``: the same with one collateral factor, each market's value truncated to
  1e-18 USD as the Exp mantissa math does; liquidatable iff shortfall > 0.
* ``morpho``: ``collateral·price·LLTV`` against the loan; liquidatable iff borrowed exceeds it.

An asset with no (or a zero) ``liquidation_threshold`` is not collateral.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from keeper.domain.margin import aave
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import INF, ZERO, price_of
from keeper.domain.model import AssetParams, Bucket

_ATTO = Decimal("1e-18")


class LendingTerms(NamedTuple):
    collateral_value: Decimal  # threshold-weighted
    debt_value: Decimal
    raw_collateral_value: Decimal  # unweighted, collateral assets only
    health_factor: Decimal
    d_collateral: Decimal  # derivatives in the price of ``wrt``
    d_debt: Decimal
    d_raw_collateral: Decimal


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


def aave_reserves(
    profile: Profile, bucket: Bucket, assets: Mapping[str, AssetParams], prices: Mapping[str, Decimal]
) -> list[aave.Reserve]:
    """The bucket's balances in Aave's integer form (collateral floored, debt ceiled to units)."""
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


def lending_terms(
    profile: Profile,
    bucket: Bucket,
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
    wrt: str | None = None,
) -> LendingTerms:
    """Collateral and debt values of a lending bucket (see the module docstring)."""
    if profile.model == "aave" and wrt is None:
        data = aave.account_data(aave_reserves(profile, bucket, assets, prices))
        coll = Decimal(aave.percent_mul(data.total_collateral_base, data.avg_lt_bps)).scaleb(-8)
        debt = Decimal(data.total_debt_base).scaleb(-8)
        raw = Decimal(data.total_collateral_base).scaleb(-8)
        hf = INF if data.health_factor_wad is None else Decimal(data.health_factor_wad).scaleb(-18)
        return LendingTerms(coll, debt, raw, hf, ZERO, ZERO, ZERO)
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
