"""Vertex (``vertex-protocol/vertex-contracts``, final release v3.4.0): weighted health over spot
balances, perps and spreads, and the liquidation the clearinghouse accepts.

Health of a type (``Clearinghouse.getHealth``, ``BaseEngine.getHealthContribution``,
``RiskHelper._getWeightX18``): ``sum amount * price * weight + sum perp vQuote``, the weight the
product's long weight for an amount >= 0 and its short weight below, of the type's kind:
``maintenance``, ``initial`` or ``unweighted`` (the PNL type: every weight 1). A spot balance
and a perp of opposite signs that the venue pairs (a spread) add
``basis * (P_spot + P_perp) * (spread - existing)`` with ``basis = min(|spot|, |perp|)``,
``existing = (spot long weight + perp long weight) / 2`` and ``spread = 1 - (1 - w) / 5``
(``w`` the perp's long weight when the spot is long, the spot's when it is short).

The engine's ``equity`` is the unweighted health and its ``requirement`` the unweighted minus the
maintenance health, so ``equity - requirement`` is the maintenance health; the subaccount is
liquidatable when it is below zero (``isUnderMaintenance``) and bankrupt when the unweighted
health is.

Liquidation (``ClearinghouseLiq.sol``): the liquidator names a product (or a spread) and an
amount; assets (spot balances, long spreads, perps) go before liabilities (borrows, short
spreads), which the contract accepts only once no asset is left. The amount changes hands at
``P * (1 + (w - 1) * liq_price_share)`` (``getLiqPriceX18``: ``w`` the maintenance weight of the
amount's side, share 1/5); a spread's spot leg at ``P_spot * (1 -/+ penalty * spread_liq_share)``
(``getSpreadLiqPriceX18``, share 1/25) and its perp leg at the perp's oracle price;
``insurance_share`` (50%) of the liquidator's discount goes to the insurance fund. A liquidation
must not leave the initial health above zero (``ERR_LIQUIDATED_TOO_MUCH``): the plan is the
largest amount that keeps it at or below zero, floored to ``size_quantum``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Final, Literal, NamedTuple

from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.types import (
    INF,
    ONE,
    ZERO,
    BucketHealth,
    Extras,
    LiquidationPlan,
    MissingParameter,
    fmt_num,
    price_of,
)
from keeper.domain.model import AssetParams, Bucket, MarketParams, Position

__all__ = [
    "SPREAD_REBATE_DIVISOR",
    "Action",
    "HealthType",
    "actions",
    "fill",
    "health",
    "health_value",
    "perp_weights",
    "plan",
    "report",
    "spot_weights",
    "spread_basis",
    "terms",
]

HealthType = Literal["initial", "maintenance", "unweighted"]

SPREAD_REBATE_DIVISOR: Final = Decimal(5)
"""``Clearinghouse.getHealth``: a spread's penalty is ``(1 - long weight) / 5`` of its notional."""


def _share(value: Decimal | None, name: str) -> Decimal:
    if value is None:
        raise MissingParameter(f"profile field {name} is required by the vertex model")
    return value


def spot_weights(assets: Mapping[str, AssetParams], extras: Extras, symbol: str,
                 ht: HealthType) -> tuple[Decimal, Decimal]:
    """``(long, short)`` weights of a spot product (an asset without weights is the quote: 1)."""
    if ht == "unweighted":
        return ONE, ONE
    a = assets.get(symbol)
    aw = None if a is None else a.asset_weight
    lw = None if a is None else a.liability_weight
    if ht == "initial":
        w = extras.initial.get(symbol)
        if w is not None:
            return w
        if aw is None and lw is None:
            return ONE, ONE
        raise MissingParameter(
            f"asset {symbol!r}: asset_weight_init and liability_weight_init are needed for the "
            f"initial health")
    return (ONE if aw is None else aw), (ONE if lw is None else lw)


def perp_weights(markets: Mapping[str, MarketParams], extras: Extras, symbol: str,
                 ht: HealthType) -> tuple[Decimal, Decimal]:
    """``(long, short)`` weights of a perp: the explicit ones, else ``1 -/+ mmf`` (``imf``)."""
    if ht == "unweighted":
        return ONE, ONE
    m = markets.get(symbol)
    if m is None:
        raise MissingParameter(f"unknown market {symbol!r}")
    pw = extras.perp_weights.get(symbol)
    long_w = short_w = None
    if pw is not None:
        long_w, short_w = (pw.long, pw.short) if ht == "maintenance" else (pw.long_init, pw.short_init)
    rate = m.mmf if ht == "maintenance" else m.imf
    if (long_w is None or short_w is None) and rate is None:
        field = "mmf (or long_weight and short_weight)" if ht == "maintenance" else \
            "imf (or long_weight_init and short_weight_init)"
        raise MissingParameter(f"market {symbol!r}: {field} is needed for the {ht} health")
    if long_w is None:
        assert rate is not None
        long_w = ONE - rate
    if short_w is None:
        assert rate is not None
        short_w = ONE + rate
    return long_w, short_w


def _weight(pair: tuple[Decimal, Decimal], amount: Decimal) -> Decimal:
    return pair[0] if amount >= 0 else pair[1]


def health_value(
    pricing: Pricing, bucket: Bucket, ht: HealthType, wrt: str | None = None
) -> tuple[Decimal, Decimal]:
    """``(health, d health / d P_wrt)`` of one type (see the module docstring)."""
    markets, assets, prices, extras = pricing.markets, pricing.assets, pricing.prices, pricing.extras
    v = dv = ZERO
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        w = _weight(spot_weights(assets, extras, sym, ht), bal)
        v += bal * px * w
        if sym == wrt:
            dv += bal * w
    for sym in sorted(bucket.positions):
        pos = bucket.positions[sym]
        px = price_of(prices, sym)
        w = _weight(perp_weights(markets, extras, sym, ht), pos.size)
        v += pos.size * px * w + pos.quote_value()
        if sym == wrt:
            dv += pos.size * w
    for perp, spot in sorted(extras.spreads.items()):
        basis, spot_amount = spread_basis(bucket, perp, spot)
        if basis == 0:
            continue
        ws = spot_weights(assets, extras, spot, ht)[0]
        wp = perp_weights(markets, extras, perp, ht)[0]
        existing = (ws + wp) / 2
        spread = ONE - (ONE - (wp if spot_amount > 0 else ws)) / SPREAD_REBATE_DIVISOR
        k = basis * (spread - existing)
        v += k * (price_of(prices, spot) + price_of(prices, perp))
        if wrt in {spot, perp}:
            dv += k
    return v, dv


def spread_basis(bucket: Bucket, perp: str, spot: str) -> tuple[Decimal, Decimal]:
    """``(basis, spot amount)``: ``min(|spot|, |perp|)`` when they have opposite signs, else 0."""
    pos = bucket.positions.get(perp)
    perp_amount = ZERO if pos is None else pos.size
    spot_amount = bucket.balances.get(spot, ZERO)
    if perp_amount == 0 or spot_amount == 0 or (spot_amount > 0) == (perp_amount > 0):
        return ZERO, spot_amount
    return min(abs(spot_amount), abs(perp_amount)), spot_amount


def terms(
    pricing: Pricing, bucket: Bucket, wrt: str | None = None
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """``(equity, requirement, d_equity, d_requirement)``: the unweighted health and the
    maintenance penalty (unweighted minus maintenance health)."""
    u, du = health_value(pricing, bucket, "unweighted", wrt)
    m, dm = health_value(pricing, bucket, "maintenance", wrt)
    return u, u - m, du, du - dm


def health(pricing: Pricing, bucket: Bucket) -> BucketHealth:
    """Liquidatable when the maintenance health is below zero; bankrupt when the unweighted is."""
    profile = pricing.profile
    eq, req, _, _ = terms(pricing, bucket)
    return BucketHealth(
        lending=False,
        equity=eq,
        requirement=req,
        health_factor=INF if req == 0 else eq / req,
        liquidatable=eq - req <= 0 if profile.strictness == "le" else eq - req < 0,
        bankrupt=eq < 0,
    )


def report(pricing: Pricing, bucket: Bucket) -> dict[str, Decimal]:
    """The three healths (``initial`` only where every product has its initial weights)."""
    out: dict[str, Decimal] = {}
    with contextlib.suppress(MissingParameter):  # no initial weights: no initial health
        out["initial"] = health_value(pricing, bucket, "initial")[0]
    out["maintenance"] = health_value(pricing, bucket, "maintenance")[0]
    out["unweighted"] = health_value(pricing, bucket, "unweighted")[0]
    return out


# --- liquidation ------------------------------------------------------------------------------


class Action(NamedTuple):
    """One liquidation the clearinghouse accepts: ``kind`` spread, perp or spot; ``amount`` the
    most it may take, signed as the contract's ``txn.amount`` (> 0 takes a long from the
    account, < 0 a short); ``perp`` / ``spot`` the products."""

    kind: Literal["spread", "perp", "spot"]
    amount: Decimal
    perp: str | None
    spot: str | None
    penalty: Decimal  # maintenance penalty of the amount, for the order within a class


def _spread_of(extras: Extras, symbol: str, *, perp: bool) -> str | None:
    if perp:
        return extras.spreads.get(symbol)
    return next((p for p, s in sorted(extras.spreads.items()) if s == symbol), None)


def actions(pricing: Pricing, bucket: Bucket) -> list[Action]:
    """The liquidations open to a liquidator, in the keeper's order: long spreads, perps, spot
    assets, then the liabilities (short spreads, borrows); within a class the largest
    maintenance penalty first, ties by symbol."""
    profile, markets, assets, prices = pricing.profile, pricing.markets, pricing.assets, pricing.prices
    extras = pricing.extras
    long_spreads: list[Action] = []
    short_spreads: list[Action] = []
    perps: list[Action] = []
    spots: list[Action] = []
    borrows: list[Action] = []
    in_spread: dict[str, Decimal] = {}
    for perp, spot in sorted(extras.spreads.items()):
        basis, spot_amount = spread_basis(bucket, perp, spot)
        if basis == 0:
            continue
        in_spread[perp] = in_spread[spot] = basis
        value = basis * (price_of(prices, spot) + price_of(prices, perp))
        if spot_amount > 0:
            long_spreads.append(Action("spread", basis, perp, spot, value))
        else:
            short_spreads.append(Action("spread", -basis, perp, spot, value))
    for sym in sorted(bucket.positions):
        size = bucket.positions[sym].size
        free = size - in_spread.get(sym, ZERO).copy_sign(size)
        if free != 0:
            w = _weight(perp_weights(markets, extras, sym, "maintenance"), free)
            perps.append(Action("perp", free, sym, None, abs(free * price_of(prices, sym) * (ONE - w))))
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        if sym == profile.settle_asset:
            continue  # the quote product is never liquidated
        free = bal - in_spread.get(sym, ZERO).copy_sign(bal)
        if free == 0:
            continue
        w = _weight(spot_weights(assets, extras, sym, "maintenance"), free)
        act = Action("spot", free, None, sym, abs(free * price_of(prices, sym) * (ONE - w)))
        (spots if free > 0 else borrows).append(act)

    def order(acts: list[Action]) -> list[Action]:
        return sorted(acts, key=lambda a: (-a.penalty, a.perp or "", a.spot or ""))

    return order(long_spreads) + order(perps) + order(spots) + order(short_spreads) + order(borrows)


class _Fill(NamedTuple):
    bucket: Bucket
    price: Decimal  # the price the liquidated product changes hands at
    fee: Decimal  # to the insurance fund, paid by the liquidator


def fill(pricing: Pricing, bucket: Bucket, act: Action, amount: Decimal) -> _Fill:
    """The account after ``amount`` (signed like ``act.amount``) of ``act`` changes hands
    (``_handleLiquidationPayment``)."""
    profile, markets, assets, prices = pricing.profile, pricing.markets, pricing.assets, pricing.prices
    extras = pricing.extras
    share = _share(profile.insurance_share, "insurance_share")
    quote = profile.settle_asset
    balances = dict(bucket.balances)
    positions = dict(bucket.positions)
    if act.kind == "spread":
        assert act.spot is not None
        assert act.perp is not None
        ps, pp = price_of(prices, act.spot), price_of(prices, act.perp)
        if amount >= 0:
            penalty = ONE - perp_weights(markets, extras, act.perp, "maintenance")[0]
        else:
            penalty = spot_weights(assets, extras, act.spot, "maintenance")[1] - ONE
        rate = penalty * _share(profile.spread_liq_share, "spread_liq_share")
        price = ps * (ONE - rate) if amount > 0 else ps * (ONE + rate)
        balances[act.spot] = balances.get(act.spot, ZERO) - amount
        balances[quote] = balances.get(quote, ZERO) + price * amount
        pos = positions[act.perp]
        positions[act.perp] = Position(act.perp, pos.size + amount, quote=pos.quote_value() - pp * amount)
        fee = (ps - price) * share * amount
    else:
        sym = act.perp if act.kind == "perp" else act.spot
        assert sym is not None
        px = price_of(prices, sym)
        weights = (perp_weights(markets, extras, sym, "maintenance") if act.kind == "perp"
                   else spot_weights(assets, extras, sym, "maintenance"))
        w = _weight(weights, amount)
        price = px * (ONE + (w - ONE) * _share(profile.liq_price_share, "liq_price_share"))
        if act.kind == "perp":
            pos = positions[sym]
            positions[sym] = Position(sym, pos.size - amount, quote=pos.quote_value() + price * amount)
        else:
            balances[sym] = balances.get(sym, ZERO) - amount
            balances[quote] = balances.get(quote, ZERO) + price * amount
        fee = (px - price) * share * amount
    balances = {k: v for k, v in balances.items() if v != 0}
    positions = {k: v for k, v in positions.items() if v.size != 0 or v.quote_value() != 0}
    return _Fill(Bucket(bucket.name, balances, positions), price, fee)


def plan(pricing: Pricing, bucket: Bucket, h: BucketHealth) -> LiquidationPlan:
    """The first liquidation of the keeper's order, of the largest amount that leaves the initial
    health at or below zero. Within one action the initial health is linear in the amount (the
    action moves one product, or a spread's basis, towards zero without crossing it), so the
    amount is the root of the line through "none" and "all of it"."""
    profile = pricing.profile
    maint = h.equity - h.requirement
    head = f"{profile.name}: maintenance health {fmt_num(maint, 6)} < 0"
    bankrupt_note = f"; unweighted health < 0: bankrupt, {profile.bad_debt_path}" if h.bankrupt else ""
    action: Literal["close_position", "bad_debt"] = "bad_debt" if h.bankrupt else "close_position"
    acts = actions(pricing, bucket)
    if not acts:
        return LiquidationPlan(
            rule=f"{head}; nothing left to liquidate but the quote balance; {profile.bad_debt_path}",
            action="bad_debt", notional=ZERO)
    act = acts[0]
    h0 = health_value(pricing, bucket, "initial")[0]
    whole = fill(pricing, bucket, act, act.amount)
    h1 = health_value(pricing, whole.bucket, "initial")[0]
    if h1 <= 0 or h1 == h0:
        amount = act.amount
        why = "all of it (initial health stays <= 0)"
    else:
        share = -h0 / (h1 - h0)
        amount = (abs(act.amount) * share).quantize(profile.size_quantum, rounding=ROUND_DOWN)
        amount = amount.copy_sign(act.amount)
        why = (f"the most that leaves initial health <= 0 ({fmt_num(share * 100, 2)}% of it; "
               f"ERR_LIQUIDATED_TOO_MUCH above)")
    done = fill(pricing, bucket, act, amount)
    after = health(pricing, done.bucket)
    insurance = _share(profile.insurance_share, "insurance_share")
    what = f"spread {act.spot}/{act.perp}" if act.kind == "spread" else f"{act.kind} {act.perp or act.spot}"
    side = "asset" if act.amount > 0 else "liability"
    sym = act.perp if act.kind == "perp" else act.spot
    assert sym is not None
    return LiquidationPlan(
        rule=f"{head}; {what} first ({side}; order: long spreads, perps, spot assets, then "
        f"liabilities); {why}; at {fmt_num(done.price, 6)}, {fmt_num(insurance * 100, 2)}% of the "
        f"discount to the insurance fund{bankrupt_note}",
        action=action,
        market=sym,
        size=amount,
        notional=abs(amount) * done.price,
        price=done.price,
        fee=done.fee,
        fee_asset=profile.settle_asset,
        health_after=None if h.bankrupt else after.health_factor,
        maintenance_health_after=after.equity - after.requirement,
    )
