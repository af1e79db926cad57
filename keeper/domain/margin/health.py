"""Perpetual buckets: equity, maintenance requirement and their slopes in one market's price.

Models (``Profile.model``):

* ``perp`` (generic, Binance, Bybit, KuCoin, Hyperliquid, dYdX): equity
  ``E = Σ balance·price (positive balances × asset_weight where the asset has one)
  + Σ (size·P + quote)``; requirement ``Σ MM(notional)`` from the market's schedule, the
  notional taken at the price (``mm_at = "liq"``) or at entry (``"entry"``).
* ``drift``: total collateral ``Σ deposits·price·asset_weight + Σ perp PnL``; requirement
  ``Σ perp MM + Σ borrows·price·liability_weight`` (spot liabilities count in the requirement).
* ``gmx``: remaining collateral ``Σ collateral·price + PnL``; requirement
  ``sizeInUsd·minCollateralFactorForLiquidation`` (``mmf`` on the entry notional); also
  liquidatable at remaining ``<= 0`` or under ``min_collateral_usd``.
* ``mango``: a perp's value ``size·P·(1 ∓ mmf) + quote`` (×``overall_asset_weight`` when
  positive) is added to the settle token before token weights; positive token totals × asset
  weight are ``equity``, negative ones × liability weight the ``requirement``.
* ``vertex`` (``venues/vertex.py``): ``equity`` the unweighted health, ``requirement`` the
  unweighted minus the maintenance health (spot and perp long/short weights, spreads);
  liquidatable when the maintenance health is below zero.
* ``aevo`` (``venues/aevo.py``): collateral × collateral ratio + position values against perp
  maintenance margins and standard margin for options.

Lending models are in ``lending.py`` (MarginFi in ``venues/marginfi.py``). Every function takes
the bucket's :class:`~keeper.domain.margin.pricing.Pricing` (profile, parameters, prices,
extras) and only reads it.

Every function here also returns the derivative of equity and requirement with respect to one
symbol's price (``wrt``). Health is piecewise linear in each price, so the local slope is exact;
the price solvers in ``prices.py`` use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final, NamedTuple

from keeper.domain.margin.lending import lending_liquidatable, lending_terms
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.tiers import Bracket, bracket_for, brackets
from keeper.domain.margin.types import INF as _INF
from keeper.domain.margin.types import ONE as _ONE
from keeper.domain.margin.types import ZERO as _ZERO
from keeper.domain.margin.types import BucketHealth, MissingParameter, MissingPrice, price_of
from keeper.domain.margin.venues import aevo, marginfi, vertex
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position

__all__ = [
    "INF",
    "ONE",
    "ZERO",
    "Terms",
    "entry_of",
    "health_of",
    "market_of",
    "perp_liquidatable",
    "perp_terms",
    "position_mm",
    "quote_of",
]

# Final: C statics in the compiled module (an imported name is a dict lookup at every use)
INF: Final = _INF
ONE: Final = _ONE
ZERO: Final = _ZERO


class Terms(NamedTuple):
    """Equity, requirement and their derivatives in the price of ``wrt``."""

    equity: Decimal
    requirement: Decimal
    d_equity: Decimal
    d_requirement: Decimal


def market_of(markets: Mapping[str, MarketParams], symbol: str) -> MarketParams:
    """The market's parameters, or :class:`MissingParameter` naming the unknown market."""
    m = markets.get(symbol)
    if m is None:
        raise MissingParameter(f"unknown market {symbol!r}")
    return m


def quote_of(pos: Position) -> Decimal:
    """``Position.quote_value()``, compiled: the position's quote balance (its value at price P is
    ``size * P + quote_of(pos)``). The engine and the screen call this one natively."""
    quote = pos.quote
    if quote is not None:
        return quote
    entry = pos.entry_price
    return ZERO if entry is None else -pos.size * entry


def entry_of(pos: Position) -> Decimal:
    """The position's entry price (``-quote / size`` where it carries a quote balance)."""
    if pos.entry_price is not None:
        return pos.entry_price
    if pos.size == 0:
        return ZERO
    return -quote_of(pos) / pos.size


def position_mm(
    profile: Profile, pos: Position, schedule: list[Bracket], price: Decimal
) -> tuple[Decimal, Decimal]:
    """``(MM, dMM/dP)`` of one position at mark ``price`` under the profile's ``mm_at``."""
    size = abs(pos.size)
    if size == 0:
        return ZERO, ZERO
    if profile.mm_at == "entry":
        notional = size * entry_of(pos)
        b = bracket_for(schedule, notional)
        return max(ZERO, notional * b.rate - b.deduction), ZERO
    notional = size * price
    b = bracket_for(schedule, notional)
    mm = notional * b.rate - b.deduction
    if mm <= 0:
        return ZERO, ZERO
    return mm, size * b.rate


def _weight(asset: AssetParams | None, field: str) -> Decimal:
    if asset is None:
        return ONE
    w: Decimal | None = getattr(asset, field)
    return ONE if w is None else w


def perp_terms(pricing: Pricing, bucket: Bucket, wrt: str | None = None) -> Terms:
    """Equity and maintenance requirement of a perpetual bucket (see the module docstring)."""
    profile = pricing.profile
    if profile.model == "mango":
        return _mango_terms(pricing, bucket, wrt)
    if profile.model == "vertex":
        return Terms(*vertex.terms(pricing, bucket, wrt))
    if profile.model == "aevo":
        return Terms(*aevo.terms(pricing, bucket, wrt))
    markets, assets, prices = pricing.markets, pricing.assets, pricing.prices
    eq = req = d_eq = d_req = ZERO
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        asset = assets.get(sym)
        if bal >= 0:
            w = _weight(asset, "asset_weight")
            eq += bal * px * w
            if sym == wrt:
                d_eq += bal * w
        elif profile.model == "drift":
            w = _weight(asset, "liability_weight")
            req += -bal * px * w
            if sym == wrt:
                d_req += -bal * w
        else:
            eq += bal * px
            if sym == wrt:
                d_eq += bal
    for sym in sorted(bucket.positions):
        pos = bucket.positions[sym]
        mark = prices.get(sym)  # price_of inlined (an interpreted helper)
        if mark is None:
            raise MissingPrice(sym)
        px = mark
        schedule = brackets(market_of(markets, sym))
        eq += pos.size * px + quote_of(pos)
        mm, dmm = position_mm(profile, pos, schedule, px)
        req += mm
        if sym == wrt:
            d_eq += pos.size
            d_req += dmm
    return Terms(eq, req, d_eq, d_req)


def _mango_terms(pricing: Pricing, bucket: Bucket, wrt: str | None) -> Terms:
    profile, markets, assets, prices = pricing.profile, pricing.markets, pricing.assets, pricing.prices
    # Token totals in USD, with each perp's value folded into the settle token before weights,
    # as Mango's health cache does.
    totals: dict[str, Decimal] = {}
    slopes: dict[str, Decimal] = {}
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        totals[sym] = bal * price_of(prices, sym)
        slopes[sym] = bal if sym == wrt else ZERO
    settle = profile.settle_asset
    for sym in sorted(bucket.positions):
        pos = bucket.positions[sym]
        px = price_of(prices, sym)
        mmf = brackets(market_of(markets, sym))[0].rate
        w = ONE - mmf if pos.size > 0 else ONE + mmf
        v = pos.size * px * w + quote_of(pos)
        dv = pos.size * w if sym == wrt else ZERO
        if v > 0:
            v *= profile.overall_asset_weight
            dv *= profile.overall_asset_weight
        totals[settle] = totals.get(settle, ZERO) + v
        slopes[settle] = slopes.get(settle, ZERO) + dv
    eq = req = d_eq = d_req = ZERO
    for sym in sorted(totals):
        t, dt = totals[sym], slopes[sym]
        asset = assets.get(sym)
        if t > 0 or (t == 0 and dt > 0):
            w = _weight(asset, "asset_weight")
            eq += t * w
            d_eq += dt * w
        else:
            w = _weight(asset, "liability_weight")
            req += -t * w
            d_req += -dt * w
    return Terms(eq, req, d_eq, d_req)


def perp_liquidatable(profile: Profile, bucket: Bucket, equity: Decimal, requirement: Decimal) -> bool:
    """The venue's liquidation test on equity and requirement (strictness per profile)."""
    if requirement <= 0:
        return False
    if profile.model == "gmx" and (
        equity <= 0 or (profile.min_collateral_usd is not None and equity < profile.min_collateral_usd)
    ):
        return True
    if profile.strictness == "le":
        return equity <= requirement
    return equity < requirement


def health_of(pricing: Pricing, bucket: Bucket) -> BucketHealth:
    """``evaluate`` without its context wrapper: for code already inside the engine's Decimal
    context (``types.exact``'s, or ``types.ENGINE`` installed by the caller, as the keeper's
    ``decide._health`` does). Compiled, so the keeper's confirmation and
    planning call it natively."""
    profile = pricing.profile
    if profile.model == "marginfi":
        return marginfi.health(pricing, bucket)
    if profile.model == "vertex":
        return vertex.health(pricing, bucket)
    if profile.model == "aevo":
        return aevo.health(pricing, bucket)
    if profile.kind == "lending":
        t = lending_terms(pricing, bucket)
        return BucketHealth(
            lending=True,
            equity=t.collateral_value,
            requirement=t.debt_value,
            health_factor=t.health_factor,
            liquidatable=lending_liquidatable(t),
            bankrupt=t.raw_collateral_value < t.debt_value,
        )
    p = perp_terms(pricing, bucket)
    hf = INF if p.requirement == 0 else p.equity / p.requirement
    return BucketHealth(
        lending=False,
        equity=p.equity,
        requirement=p.requirement,
        health_factor=hf,
        liquidatable=perp_liquidatable(profile, bucket, p.equity, p.requirement),
        bankrupt=p.equity < 0,
    )
