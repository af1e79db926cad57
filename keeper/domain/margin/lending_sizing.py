"""Lending liquidation sizing: which debt/collateral pair, how much, what is seized.

The pair (the lending half of the deterministic cross-bucket rule, docs/margin.md): the debt
with the largest USD value, repaid against the collateral with the largest USD value among the
assets that count as collateral; ties by asset symbol. A ``LiquidationRequest`` replaces the
pair and caps the amount. Amounts by ``Profile.sizing``: ``close_factor_max`` (Aave in its
integer math with v3.3's close factor and dust rule, Compound v2), ``restore`` (Morpho Blue:
the contract's own ``liquidate`` in its integers, ``keeper.domain.morpho``: the least seizure
that restores ``target_health``, or the request's repayment as repaid shares) and
``absorb`` (Comet). A bankrupt bucket is planned as ``bad_debt``: the remaining collateral is
taken and the rule names the venue's bad-debt path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal

from keeper.domain.margin import aave
from keeper.domain.margin.evaluate import evaluate
from keeper.domain.margin.lending import (
    MorphoUnits,
    aave_reserves,
    decimals_of,
    lending_terms,
    morpho_units,
    threshold,
)
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.types import (
    ONE,
    ZERO,
    BucketHealth,
    LiquidationPlan,
    LiquidationRequest,
    MissingParameter,
    fmt_num,
    fmt_usd,
    price_of,
    quantize_up,
)
from keeper.domain.model import AssetParams, Bucket
from keeper.domain.morpho import liquidation as lq
from keeper.domain.morpho.liquidation import ZERO_ADDRESS
from keeper.domain.morpho.mathlib import VIRTUAL_SHARES, WAD, liquidation_incentive_factor, to_shares_down
from keeper.domain.morpho.state import Market as MorphoMarket
from keeper.domain.morpho.state import Position as MorphoPosition

__all__ = ["pick_pair", "plan_lending"]

# --- lending --------------------------------------------------------------------------------


def pick_pair(pricing: Pricing, bucket: Bucket, request: LiquidationRequest | None) -> tuple[str, str | None]:
    """``(debt asset, collateral asset)``: largest debt value and largest collateral value,
    ties by symbol; a request's choice where given (checked against the bucket)."""
    assets, prices = pricing.assets, pricing.prices
    if request is not None:
        if bucket.balances.get(request.repay_asset, ZERO) >= 0:
            raise MissingParameter(f"liquidation_request.repay_asset: {request.repay_asset!r} is not a debt")
        if bucket.balances.get(request.seize_asset, ZERO) <= 0:
            raise MissingParameter(
                f"liquidation_request.seize_asset: {request.seize_asset!r} is not collateral"
            )
        return request.repay_asset, request.seize_asset
    debts = sorted((bal * price_of(prices, s), s) for s, bal in bucket.balances.items() if bal < 0)
    debt = debts[0][1]  # most negative value first; ties: sorted by symbol
    colls = [(-(bal * price_of(prices, s)), s) for s, bal in bucket.balances.items() if bal > 0]
    counted = [c for c in colls if threshold(assets, c[1]) > 0] or colls
    coll = sorted(counted)[0][1] if counted else None
    return debt, coll


def _bonus(profile: Profile, assets: Mapping[str, AssetParams], sym: str) -> Decimal:
    a = assets.get(sym)
    if a is not None and a.liquidation_bonus is not None:
        return a.liquidation_bonus
    return profile.liquidation_bonus or ZERO


def _fee(assets: Mapping[str, AssetParams], sym: str) -> Decimal:
    a = assets.get(sym)
    return ZERO if a is None or a.liquidation_protocol_fee is None else a.liquidation_protocol_fee


def _after(bucket: Bucket, debt: str, repay: Decimal, coll: str, seize: Decimal) -> Bucket:
    bal = dict(bucket.balances)
    bal[debt] = bal[debt] + repay
    bal[coll] = bal[coll] - seize
    return Bucket(bucket.name, {k: v for k, v in bal.items() if v != 0}, dict(bucket.positions))


def plan_lending(
    pricing: Pricing, bucket: Bucket, h: BucketHealth, request: LiquidationRequest | None
) -> LiquidationPlan:
    """The lending liquidation the keeper would submit (see the module docstring)."""
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    debt, coll = pick_pair(pricing, bucket, request)
    head = f"{profile.name}: HF {fmt_num(h.health_factor, 4)} < 1"
    pair = "largest debt, largest collateral" if request is None else "the liquidator's request"
    if coll is None:
        return LiquidationPlan(
            rule=f"{head}; no collateral left: {profile.bad_debt_path}",
            action="bad_debt",
            repay_asset=debt,
            notional=ZERO,
        )
    if profile.model == "aave":
        return _plan_aave(pricing, bucket, h, request, debt=debt, coll=coll, head=head, pair=pair)
    if profile.model == "morpho":
        u = morpho_units(pricing, bucket)
        if u is not None and u.loan is not None:
            return _plan_morpho(pricing, bucket, h, request, u=u, head=head, pair=pair)
    pd, pc = price_of(prices, debt), price_of(prices, coll)
    dd, dc = decimals_of(profile, assets, debt), decimals_of(profile, assets, coll)
    owed, held = -bucket.balances[debt], bucket.balances[coll]
    q_d, q_c = Decimal(1).scaleb(-dd), Decimal(1).scaleb(-dc)
    if profile.sizing == "absorb":
        return LiquidationPlan(
            rule=f"{head} (liquidity < 0); absorb: the protocol seizes all collateral at its "
            f"liquidationFactor and takes over the debt"
            + ("; the request's amount does not apply: absorb always takes the whole account"
               if request is not None else "")
            + (f"; {profile.bad_debt_path}" if h.bankrupt else ""),
            action="bad_debt" if h.bankrupt else "repay_seize",
            close_factor=ONE,
            repay_asset=debt,
            repay_amount=owed,
            seize_asset=coll,
            seize_amount=held,
            protocol_fee=ZERO,
            notional=owed * pd,
        )
    cf: Decimal | None
    if profile.model == "morpho":
        lltv = threshold(assets, coll)
        assert profile.lif_max is not None
        assert profile.lif_cursor is not None
        lif = min(profile.lif_max, ONE / (profile.lif_cursor * lltv + ONE - profile.lif_cursor))
        bonus = lif - ONE
        cf = None
        t = lending_terms(pricing, bucket)
        tau = profile.target_health
        denom = tau - lif * lltv
        need = owed if denom <= 0 else (tau * t.debt_value - t.collateral_value) / denom / pd
        if request is None:
            amount = min(owed, quantize_up(need, q_d))
            why = f"no close factor; repay the least that restores health {tau} (LIF {fmt_num(lif, 6)})"
        else:  # the venue's rule bounds a request by the debt and the collateral only
            amount = owed
            why = f"no close factor; the requested repayment (LIF {fmt_num(lif, 6)})"
        fee_share = ZERO
    else:  # compound-v2
        bonus = _bonus(profile, assets, coll)
        lif = ONE + bonus
        cf = profile.close_factor or ONE
        amount = (owed * cf).quantize(q_d, rounding=ROUND_DOWN)
        why = f"close factor {fmt_num(cf * 100, 2)}% of the borrow"
        fee_share = profile.protocol_seize_share or ZERO
    if request is not None:
        amount = min(amount, request.amount.quantize(q_d, rounding=ROUND_DOWN))
    seize = (amount * lif * pd / pc).quantize(q_c, rounding=ROUND_DOWN)
    if seize > held:
        seize = held
        amount = (held * pc / (lif * pd)).quantize(q_d, rounding=ROUND_DOWN)
    fee = (seize * fee_share).quantize(q_c, rounding=ROUND_DOWN)
    after = evaluate(pricing, _after(bucket, debt, amount, coll, seize))
    return LiquidationPlan(
        rule=f"{head}; {pair}: repay {debt}, seize {coll}; {why}"
        + (f"; bankrupt: {profile.bad_debt_path}" if h.bankrupt else ""),
        action="bad_debt" if h.bankrupt else "repay_seize",
        close_factor=cf,
        repay_asset=debt,
        repay_amount=amount,
        seize_asset=coll,
        seize_amount=seize,
        protocol_fee=fee,
        bonus=bonus,
        notional=amount * pd,
        health_after=after.health_factor,
    )


def _plan_morpho(
    pricing: Pricing,
    bucket: Bucket,
    h: BucketHealth,
    request: LiquidationRequest | None,
    *,
    u: MorphoUnits,
    head: str,
    pair: str,
) -> LiquidationPlan:
    """Morpho Blue's ``liquidate`` itself (``keeper.domain.morpho.liquidation``) on the bucket as
    a market of its own (no interest, borrow shares at the first borrow's rate, 1e6 a unit):
    the plan's least restoring seizure, or the request's repayment as repaid shares
    (``toSharesDown``), capped at the collateral."""
    assert u.loan is not None
    profile, prices = pricing.profile, pricing.prices
    shares = u.debt_units * VIRTUAL_SHARES
    m = MorphoMarket(id="scenario", loan_token=u.loan, collateral_token=u.collateral, oracle="",
                     irm=ZERO_ADDRESS, lltv=u.lltv, total_borrow_assets=u.debt_units,
                     total_borrow_shares=shares, price=u.price36)
    pos = MorphoPosition(borrow_shares=shares, collateral=u.collateral_units)
    t = lq.accrue(m, 0).totals
    lif = liquidation_incentive_factor(u.lltv)
    if request is not None:
        asked = int(request.amount.scaleb(u.loan_decimals).to_integral_value(rounding=ROUND_DOWN))
        repaid_shares = min(shares, to_shares_down(asked, t.borrow_assets, t.borrow_shares))
        try:
            r = lq.liquidate(m, pos, t, u.price36, repaid_shares=repaid_shares)
            why = f"repay {repaid_shares} borrow shares (toSharesDown of the requested amount)"
        except lq.Reverts:  # it would seize more than the collateral: take all of it
            r = lq.liquidate(m, pos, t, u.price36, seized_assets=u.collateral_units)
            why = "the requested repayment needs more than the collateral: seize all of it"
    else:
        p = lq.plan(m, pos, verdict_time=0, plan_time=0,
                    target=int(profile.target_health.scaleb(18).to_integral_value(rounding=ROUND_DOWN)))
        if p is None:  # the integer rule finds it healthy: nothing the contract would accept
            raise MissingParameter("morpho: the contract's rule finds this bucket healthy")
        r, why = p.result, p.why
    repay = Decimal(r.repaid_assets).scaleb(-u.loan_decimals)
    seize = Decimal(r.seized_assets).scaleb(-u.collateral_decimals)
    after = evaluate(pricing, _after(bucket, u.loan, repay, u.collateral, seize))
    bad = r.bad_debt_shares > 0 or h.bankrupt
    return LiquidationPlan(
        rule=f"{head}; {pair}: repay {u.loan}, seize {u.collateral}; no close factor; {why}; "
        f"the contract's integers (LIF {fmt_num(Decimal(lif).scaleb(-18), 6)})"
        + (f"; bankrupt: {profile.bad_debt_path}" if bad else ""),
        action="bad_debt" if bad else "repay_seize",
        close_factor=None,
        repay_asset=u.loan,
        repay_amount=repay,
        seize_asset=u.collateral,
        seize_amount=seize,
        protocol_fee=ZERO,
        bonus=Decimal(lif - WAD).scaleb(-18),
        notional=repay * price_of(prices, u.loan),
        health_after=after.health_factor,
    )


def _plan_aave(
    pricing: Pricing,
    bucket: Bucket,
    h: BucketHealth,
    request: LiquidationRequest | None,
    *,
    debt: str,
    coll: str,
    head: str,
    pair: str,
) -> LiquidationPlan:
    profile, assets, prices = pricing.profile, pricing.assets, pricing.prices
    reserves = {r.symbol: r for r in aave_reserves(pricing, bucket)}
    data = aave.account_data(list(reserves.values()))
    d, c = reserves[debt], reserves[coll]
    hf_wad = data.health_factor_wad if data.health_factor_wad is not None else 0
    owed = -d.units
    bonus = _bonus(profile, assets, coll)
    bonus_bps = aave.PERCENTAGE_FACTOR + aave.to_bps(bonus)
    fee_bps = aave.to_bps(_fee(assets, coll))
    if profile.close_factor_scope == "total":
        assert profile.close_factor_min_base is not None
        threshold_base = aave.to_price8(profile.close_factor_min_base)
        max_debt, cf_bps = aave.max_debt_v33(
            health_factor_wad=hf_wad,
            total_debt_base=data.total_debt_base,
            reserve_debt_units=owed,
            reserve_debt_base=aave.base_value(owed, d.price8, d.decimals),
            reserve_collateral_base=aave.base_value(c.units, c.price8, c.decimals),
            debt_price8=d.price8,
            debt_decimals=d.decimals,
            min_base_threshold=threshold_base,
        )
        if cf_bps == aave.DEFAULT_CLOSE_FACTOR:
            floor_usd = fmt_usd(profile.close_factor_min_base)
            why = f"close factor 50% of total debt (HF > 0.95, reserves >= {floor_usd})"
        elif hf_wad <= aave.CLOSE_FACTOR_HF_THRESHOLD:
            why = "close factor 100% (HF <= 0.95)"
        else:
            why = f"close factor 100% (reserve collateral or debt < {fmt_usd(profile.close_factor_min_base)})"
    else:
        cf_bps = aave.close_factor_v30(hf_wad)
        max_debt = aave.percent_mul(owed, cf_bps)
        why = (
            "close factor 50% of the reserve's debt (HF > 0.95)"
            if cf_bps == aave.DEFAULT_CLOSE_FACTOR
            else "close factor 100% (HF <= 0.95)"
        )
    amount = max_debt if request is None else min(max_debt, aave.to_units(request.amount, d.decimals))

    def seizure(units: int) -> aave.Seizure:
        return aave.collateral_to_liquidate(
            debt_to_cover=units,
            debt_price8=d.price8,
            debt_decimals=d.decimals,
            collateral_balance=c.units,
            collateral_price8=c.price8,
            collateral_decimals=c.decimals,
            bonus_bps=bonus_bps,
            protocol_fee_bps=fee_bps,
        )

    s = seizure(amount)
    if profile.min_leftover_base is not None:
        s, note = _avoid_dust(profile, s, seizure, debt=d, coll=c, owed=owed, bonus_bps=bonus_bps)
        why += note
    repay = aave.from_units(s.debt_units, d.decimals)
    seize = aave.from_units(s.collateral_units, c.decimals)
    after = evaluate(pricing, _after(bucket, debt, repay, coll, seize))
    bankrupt_note = f"; bankrupt: {profile.bad_debt_path}" if h.bankrupt else ""
    return LiquidationPlan(
        rule=f"{head}; {pair}: repay {debt}, seize {coll}; {why}{bankrupt_note}",
        action="bad_debt" if h.bankrupt else "repay_seize",
        close_factor=Decimal(cf_bps).scaleb(-4).normalize(),
        repay_asset=debt,
        repay_amount=repay,
        seize_asset=coll,
        seize_amount=seize,
        protocol_fee=aave.from_units(s.protocol_fee_units, c.decimals),
        bonus=bonus,
        notional=repay * price_of(prices, debt),
        health_after=after.health_factor,
    )


def _avoid_dust(
    profile: Profile,
    s: aave.Seizure,
    seizure: Callable[[int], aave.Seizure],
    *,
    debt: aave.Reserve,
    coll: aave.Reserve,
    owed: int,
    bonus_bps: int,
) -> tuple[aave.Seizure, str]:
    """v3.3 MustNotLeaveDust: shrink a partial liquidation so at least the minimum is left."""
    assert profile.min_leftover_base is not None
    d, c = debt, coll
    floor_base = aave.to_price8(profile.min_leftover_base)

    def dusty(x: aave.Seizure) -> bool:
        return aave.leaves_dust(
            seizure=x,
            reserve_debt_units=owed,
            debt_price8=d.price8,
            debt_decimals=d.decimals,
            collateral_balance=c.units,
            collateral_price8=c.price8,
            collateral_decimals=c.decimals,
            min_leftover_base=floor_base,
        )

    if not dusty(s):
        return s, ""
    keep_debt = -(-floor_base * 10**d.decimals // d.price8)  # ceil: units worth the minimum
    keep_coll = -(-floor_base * 10**c.decimals // c.price8)
    cand = min(s.debt_units, owed - keep_debt)
    coll_room = c.units - keep_coll
    if coll_room > 0:
        by_coll = aave.percent_div(
            (c.price8 * coll_room * 10**d.decimals) // (d.price8 * 10**c.decimals), bonus_bps
        )
        cand = min(cand, by_coll)
    while cand > 0:
        x = seizure(cand)
        if not dusty(x):
            return x, f"; reduced to leave at least {fmt_usd(profile.min_leftover_base)} (dust rule)"
        cand -= max(1, cand // 10**6)
    return s, f"; no partial amount leaves {fmt_usd(profile.min_leftover_base)} (MustNotLeaveDust)"

