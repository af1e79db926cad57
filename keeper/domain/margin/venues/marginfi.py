"""MarginFi v2 (``mrgnlabs/marginfi-v2``): weighted health on confidence-biased prices, the
classic liquidation with its liquidator discount and insurance fee, and bankruptcy.

Health (``RiskEngine::get_account_health_components``, ``marginfi_account.rs``): every asset
balance is valued at ``P - c`` times its asset weight, every liability at ``P + c`` times its
liability weight, where ``c`` is the oracle's confidence widened by ``conf_multiple`` (2.12 for
Pyth) and capped at ``conf_cap`` (5%) of the price; a widened confidence above ``conf_max``
(10%, the default ``oracle_max_confidence``) of the price makes the program refuse the price.
Weights by requirement: ``initial`` (``asset_weight_init`` / ``liability_weight_init``),
``maintenance`` (``asset_weight`` / ``liability_weight``) and ``equity`` (1 and 1).

An account is liquidatable when its maintenance health ``assets - liabilities`` is not above
zero (``healthy = health > 0``), and bankrupt when its equity assets are below its equity
liabilities. A classic liquidation seizes ``q`` of one asset: the liquidator pays
``q * P_a * (1 - liquidator_fee) / P_l`` of the liability, the account's liability falls by
``q * P_a * (1 - liquidator_fee - insurance_fee) / P_l`` and the difference goes to the
insurance fund (both prices biased as above). The program accepts it only when the maintenance
health after is still at most zero, better than before, and the liability not exhausted; the
plan is the largest such ``q``, floored to the asset's native units.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Literal, NamedTuple

from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import (
    INF,
    ONE,
    ZERO,
    BucketHealth,
    Extras,
    LiquidationPlan,
    LiquidationRequest,
    MissingParameter,
    OracleRefused,
    fmt_num,
    price_of,
)
from keeper.domain.model import AssetParams, Bucket

__all__ = ["Requirement", "Values", "confidence", "health", "plan", "report", "values"]

Requirement = Literal["initial", "maintenance", "equity"]


class Values(NamedTuple):
    """Weighted assets and liabilities of one requirement, and their slopes in one price."""

    assets: Decimal
    liabilities: Decimal
    d_assets: Decimal
    d_liabilities: Decimal


def _param(value: Decimal | None, name: str) -> Decimal:
    if value is None:
        raise MissingParameter(f"profile field {name} is required by the marginfi model")
    return value


def confidence(
    profile: Profile, symbol: str, price: Decimal, extras: Extras, *, strict: bool = True
) -> tuple[Decimal, Decimal]:
    """``(c, dc/dP)``: the bias of ``symbol``'s price (``price.rs``, ``get_confidence_interval``).

    ``strict``: refuse a widened confidence above ``conf_max`` of the price, as the program does
    (the price solvers pass False: they ask about prices the oracle has not published).
    """
    raw = extras.conf.get(symbol)
    if raw is None or raw == 0:
        return ZERO, ZERO
    wide = raw * _param(profile.conf_multiple, "conf_multiple")
    if strict and wide > price * _param(profile.conf_max, "conf_max"):
        raise OracleRefused(
            f"{symbol}: confidence {raw} x {profile.conf_multiple} = {wide} is above "
            f"{fmt_num(_param(profile.conf_max, 'conf_max') * 100, 2)}% of the price {price}: "
            f"the program refuses the price (OracleMaxConfidenceExceeded)"
        )
    cap_share = _param(profile.conf_cap, "conf_cap")
    if wide > price * cap_share:
        return price * cap_share, cap_share
    return wide, ZERO


def _weights(assets: Mapping[str, AssetParams], extras: Extras, symbol: str,
             req: Requirement) -> tuple[Decimal, Decimal]:
    if req == "equity":
        return ONE, ONE
    if req == "initial":
        w = extras.initial.get(symbol)
        if w is None:
            raise MissingParameter(
                f"asset {symbol!r}: asset_weight_init and liability_weight_init are needed for "
                f"the initial health")
        return w
    a = assets.get(symbol)
    aw = None if a is None else a.asset_weight
    lw = None if a is None else a.liability_weight
    return (ONE if aw is None else aw), (ONE if lw is None else lw)


def values(pricing: Pricing, bucket: Bucket, req: Requirement, wrt: str | None = None) -> Values:
    """Weighted assets and liabilities of ``req`` (``calc_weighted_asset_value`` and
    ``calc_weighted_liab_value``), with slopes in the price of ``wrt``."""
    profile, assets, prices, extras = pricing.profile, pricing.assets, pricing.prices, pricing.extras
    a = li = da = dl = ZERO
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        c, dc = confidence(profile, sym, px, extras, strict=wrt is None)
        aw, lw = _weights(assets, extras, sym, req)
        if bal > 0:
            a += bal * (px - c) * aw
            if sym == wrt:
                da += bal * (ONE - dc) * aw
        elif bal < 0:
            li += -bal * (px + c) * lw
            if sym == wrt:
                dl += -bal * (ONE + dc) * lw
    return Values(a, li, da, dl)


def health(pricing: Pricing, bucket: Bucket) -> BucketHealth:
    """The bucket's health: ``equity`` / ``requirement`` are the maintenance-weighted assets and
    liabilities; liquidatable when they have liabilities and assets <= liabilities."""
    profile = pricing.profile
    m = values(pricing, bucket, "maintenance")
    e = values(pricing, bucket, "equity")
    return BucketHealth(
        lending=True,
        equity=m.assets,
        requirement=m.liabilities,
        health_factor=INF if m.liabilities == 0 else m.assets / m.liabilities,
        liquidatable=m.liabilities > 0 and (
            m.assets <= m.liabilities if profile.strictness == "le" else m.assets < m.liabilities),
        bankrupt=e.assets < e.liabilities,
    )


def report(pricing: Pricing, bucket: Bucket) -> dict[str, Decimal]:
    """``assets - liabilities`` per requirement (``initial`` only where every balance has its
    initial weights)."""
    out: dict[str, Decimal] = {}
    if all(s in pricing.extras.initial for s in bucket.balances):
        i = values(pricing, bucket, "initial")
        out["initial"] = i.assets - i.liabilities
    m = values(pricing, bucket, "maintenance")
    e = values(pricing, bucket, "equity")
    out["maintenance"] = m.assets - m.liabilities
    out["equity"] = e.assets - e.liabilities
    return out


# --- liquidation ------------------------------------------------------------------------------


def _unit(profile: Profile, assets: Mapping[str, AssetParams], symbol: str) -> Decimal:
    a = assets.get(symbol)
    dec = profile.default_decimals if a is None or a.decimals is None else a.decimals
    return Decimal(1).scaleb(-dec)


def _after(bucket: Bucket, debt: str, repaid: Decimal, coll: str, seized: Decimal) -> Bucket:
    bal = dict(bucket.balances)
    bal[debt] = bal[debt] + repaid
    bal[coll] = bal[coll] - seized
    return Bucket(bucket.name, {k: v for k, v in bal.items() if v != 0}, dict(bucket.positions))


class _Leg(NamedTuple):
    symbol: str
    price: Decimal  # biased: low for the asset, high for the liability
    weight: Decimal  # maintenance


def _legs(pricing: Pricing, bucket: Bucket) -> tuple[list[_Leg], list[_Leg]]:
    """Collateral and liabilities with their biased prices and maintenance weights."""
    profile, assets, prices, extras = pricing.profile, pricing.assets, pricing.prices, pricing.extras
    colls: list[_Leg] = []
    debts: list[_Leg] = []
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        c, _ = confidence(profile, sym, px, extras)
        aw, lw = _weights(assets, extras, sym, "maintenance")
        if bal > 0:
            colls.append(_Leg(sym, px - c, aw))
        elif bal < 0:
            debts.append(_Leg(sym, px + c, lw))
    return colls, debts


def plan(
    pricing: Pricing, bucket: Bucket, h: BucketHealth, request: LiquidationRequest | None
) -> LiquidationPlan:
    """The classic liquidation (``lending_account_liquidate``, ``liquidate.rs``) the keeper would
    submit: the largest liability against the collateral with the largest maintenance value
    among those whose seizure raises health (ties by symbol), or the request's pair; the most
    collateral the program accepts (maintenance health after <= 0, the liability not
    exhausted), floored to the asset's native units."""
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    f_l = _param(profile.liquidator_fee, "liquidator_fee")
    f_i = _param(profile.insurance_fee, "insurance_fee")
    keep = ONE - f_l - f_i  # share of the seized value that repays the account's liability
    colls, debts = _legs(pricing, bucket)
    health_now = h.equity - h.requirement
    head = (f"{profile.name}: maintenance health {fmt_num(health_now, 6)} <= 0 "
            f"(assets {fmt_num(h.equity, 2)}, liabilities {fmt_num(h.requirement, 2)})")
    bankrupt_note = f"; bankrupt: {profile.bad_debt_path}" if h.bankrupt else ""
    action: Literal["repay_seize", "bad_debt"] = "bad_debt" if h.bankrupt else "repay_seize"
    by_value = {leg.symbol: abs(bucket.balances[leg.symbol]) * leg.price * leg.weight
                for leg in colls + debts}
    if request is not None:
        debt = next((d for d in debts if d.symbol == request.repay_asset), None)
        coll = next((c for c in colls if c.symbol == request.seize_asset), None)
        if debt is None:
            raise MissingParameter(f"liquidation_request.repay_asset: {request.repay_asset!r} is not a debt")
        if coll is None:
            raise MissingParameter(
                f"liquidation_request.seize_asset: {request.seize_asset!r} is not collateral")
        pair = "the liquidator's request"
    else:
        debt = min(debts, key=lambda d: (-by_value[d.symbol], d.symbol))
        useful = [c for c in colls if keep * debt.weight > c.weight]
        coll = min(useful, key=lambda c: (-by_value[c.symbol], c.symbol)) if useful else None
        pair = "largest liability, largest collateral whose seizure raises health"
    if coll is None:
        return LiquidationPlan(
            rule=f"{head}; no collateral whose seizure raises health against {debt.symbol} "
            f"(the program refuses a liquidation that does not improve health){bankrupt_note}",
            action=action, repay_asset=debt.symbol, notional=ZERO)
    gain = coll.price * (keep * debt.weight - coll.weight)  # health per unit seized
    owed = -bucket.balances[debt.symbol]
    held = bucket.balances[coll.symbol]
    unit_c, unit_d = _unit(profile, assets, coll.symbol), _unit(profile, assets, debt.symbol)
    # the liability must stay non-empty: at least one native unit of it is left
    by_debt = (owed - unit_d) * debt.price / (coll.price * keep)
    if gain <= 0:  # a requested pair whose seizure would lower health: the program refuses it
        return LiquidationPlan(
            rule=f"{head}; {pair}: seizing {coll.symbol} against {debt.symbol} lowers health "
            f"(WorseHealthPostLiquidation){bankrupt_note}",
            action=action, repay_asset=debt.symbol, seize_asset=coll.symbol, notional=ZERO)
    most = min(-health_now / gain, held, by_debt)
    why = "the most the program accepts (maintenance health after <= 0, liability not exhausted)"
    if request is not None:
        asked = (request.amount if request.by == "seize"
                 else request.amount * debt.price / (coll.price * keep))
        why = "the requested amount" if asked <= most else f"the request, capped: {why}"
        most = min(most, asked)
    seize = max(ZERO, most).quantize(unit_c, rounding=ROUND_DOWN)
    paid = seize * coll.price * (ONE - f_l) / debt.price  # by the liquidator
    repaid = seize * coll.price * keep / debt.price  # off the account's liability
    after_bucket = _after(bucket, debt.symbol, repaid, coll.symbol, seize)
    after = values(pricing, after_bucket, "maintenance")
    return LiquidationPlan(
        rule=f"{head}; {pair}: repay {debt.symbol}, seize {coll.symbol}; {why}; liquidator "
        f"discount {fmt_num(f_l * 100, 2)}%, insurance fee {fmt_num(f_i * 100, 2)}% of the seized "
        f"value{bankrupt_note}",
        action=action,
        repay_asset=debt.symbol,
        repay_amount=repaid,
        seize_asset=coll.symbol,
        seize_amount=seize,
        bonus=f_l,
        fee=paid - repaid,
        fee_asset=debt.symbol,
        notional=repaid * price_of(prices, debt.symbol),
        health_after=INF if after.liabilities == 0 else after.assets / after.liabilities,
        maintenance_health_after=after.assets - after.liabilities,
    )
