"""Aevo (docs.aevo.xyz): cross-margin over collateral, perps and options, standard margin.

Account balance (``AB``): collateral ``balance * price * collateral ratio`` (the asset's
``asset_weight``: USDC 100%, ETH 90%, ...; a negative balance at its full value) plus each
position's value ``size * P + quote`` (a perp's PnL; an option's mark value with ``quote`` 0 once
its premium is in the balance). Maintenance margin (``MM``): a perp's ``mmf`` (or tiers) on its
notional at the mark; standard margin for options: a long none, a short call
``|size| * (0.1 * spot + mark)``, a short put ``|size| * (max(0.1 * spot, 0.1 * mark) + mark)``,
``spot`` the price of the option's underlying. The account is healthy while
``AB - OO - MM > 0`` (open orders ``OO`` are not in a scenario): liquidatable at
``AB <= MM``.

Liquidation steps (technical-architecture/liquidations): open orders cancelled; the short
positions reduced on the order book by limit orders every 2 s for at most 30 s, each fill paying
the liquidation fee (tier-1 perps 1%, tier-2 3%, options 0.5% of the underlying's value), the
account re-evaluated after each step; what the book cannot take goes to the insurance fund at a
markup (fee charged), and bankrupt accounts to auto-deleveraging at the mark price. The plan is
the first step: the least of the first position (shorts first, then the largest maintenance
margin, ties by symbol) that brings ``AB`` back above ``MM`` when closed at the mark net of the
fee, rounded up to the amount step.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.tiers import bracket_for, brackets
from keeper.domain.margin.types import (
    INF,
    ONE,
    ZERO,
    BucketHealth,
    Extras,
    LiquidationPlan,
    MissingParameter,
    OptionSpec,
    fmt_num,
    fmt_usd,
    price_of,
    quantize_up,
)
from keeper.domain.model import Bucket, Position

__all__ = ["close", "health", "option_mm", "plan", "position_mm", "terms"]


def _rate(profile: Profile) -> Decimal:
    if profile.option_mm_rate is None:
        raise MissingParameter("profile field option_mm_rate is required by the aevo model")
    return profile.option_mm_rate


def option_mm(
    profile: Profile, opt: OptionSpec, size: Decimal, mark: Decimal, spot: Decimal,
    *, wrt_mark: bool, wrt_spot: bool,
) -> tuple[Decimal, Decimal]:
    """``(MM, dMM/dP)`` of an option position under standard margin (``standard-margin``)."""
    if size >= 0:
        return ZERO, ZERO
    n, r = -size, _rate(profile)
    if opt.kind == "call":
        slope = (n if wrt_mark else ZERO) + (n * r if wrt_spot else ZERO)
        return n * (r * spot + mark), slope
    by_spot = r * spot >= r * mark
    slope = ((n * (ONE if by_spot else ONE + r) if wrt_mark else ZERO)
             + (n * r if wrt_spot and by_spot else ZERO))
    return n * (max(r * spot, r * mark) + mark), slope


def position_mm(
    pricing: Pricing, sym: str, pos: Position, wrt: str | None = None
) -> tuple[Decimal, Decimal]:
    """``(MM, dMM/dP_wrt)`` of one position: standard margin for an option, else the perp's."""
    profile, markets, prices, extras = pricing.profile, pricing.markets, pricing.prices, pricing.extras
    px = price_of(prices, sym)
    opt = extras.options.get(sym)
    if opt is not None:
        spot = price_of(prices, opt.underlying)
        return option_mm(profile, opt, pos.size, px, spot,
                         wrt_mark=sym == wrt, wrt_spot=opt.underlying == wrt)
    m = markets.get(sym)
    if m is None:
        raise MissingParameter(f"unknown market {sym!r}")
    notional = abs(pos.size) * px
    if notional == 0:
        return ZERO, ZERO
    b = bracket_for(brackets(m), notional)
    mm = notional * b.rate - b.deduction
    if mm <= 0:
        return ZERO, ZERO
    return mm, (abs(pos.size) * b.rate if sym == wrt else ZERO)


def terms(
    pricing: Pricing, bucket: Bucket, wrt: str | None = None
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """``(AB, MM, dAB/dP_wrt, dMM/dP_wrt)`` (see the module docstring)."""
    assets, prices = pricing.assets, pricing.prices
    eq = req = d_eq = d_req = ZERO
    for sym in sorted(bucket.balances):
        bal = bucket.balances[sym]
        px = price_of(prices, sym)
        a = assets.get(sym)
        w = ONE if bal < 0 or a is None or a.asset_weight is None else a.asset_weight
        eq += bal * px * w
        if sym == wrt:
            d_eq += bal * w
    for sym in sorted(bucket.positions):
        pos = bucket.positions[sym]
        eq += pos.size * price_of(prices, sym) + pos.quote_value()
        if sym == wrt:
            d_eq += pos.size
        mm, dmm = position_mm(pricing, sym, pos, wrt)
        req += mm
        d_req += dmm
    return eq, req, d_eq, d_req


def health(pricing: Pricing, bucket: Bucket) -> BucketHealth:
    """Liquidatable at ``AB <= MM`` (with something to maintain); bankrupt at ``AB < 0``."""
    profile = pricing.profile
    eq, req, _, _ = terms(pricing, bucket)
    return BucketHealth(
        lending=False,
        equity=eq,
        requirement=req,
        health_factor=INF if req == 0 else eq / req,
        liquidatable=req > 0 and (eq <= req if profile.strictness == "le" else eq < req),
        bankrupt=eq < 0,
    )


def _fee_base(sym: str, prices: Mapping[str, Decimal], extras: Extras) -> Decimal:
    """The price a liquidation fee is charged on: an option's underlying, a perp's mark."""
    opt = extras.options.get(sym)
    return price_of(prices, opt.underlying if opt is not None else sym)


def close(pricing: Pricing, bucket: Bucket, sym: str, amount: Decimal) -> tuple[Bucket, Decimal]:
    """The bucket after closing ``amount`` (signed like the position) at the mark, and the fee."""
    markets, prices, extras = pricing.markets, pricing.prices, pricing.extras
    m = markets.get(sym)
    rate = ZERO if m is None or m.liquidation_fee is None else m.liquidation_fee
    fee = rate * abs(amount) * _fee_base(sym, prices, extras)
    pos = bucket.positions[sym]
    positions = dict(bucket.positions)
    quote = pos.quote_value() + amount * price_of(prices, sym) - fee
    positions[sym] = Position(sym, pos.size - amount, quote=quote)
    return Bucket(bucket.name, dict(bucket.balances), positions), fee


def plan(pricing: Pricing, bucket: Bucket, h: BucketHealth) -> LiquidationPlan:
    """Step 2 of the liquidation process on the first position (see the module docstring).
    ``AB - MM`` is linear in the amount closed (fees and maintenance margins are proportional to
    it at fixed prices), so the least amount is that line's root, rounded up."""
    profile, prices = pricing.profile, pricing.prices
    head = f"{profile.name}: AB {fmt_num(h.equity, 2)} - MM {fmt_num(h.requirement, 2)} <= 0"
    order = sorted(
        ((sym, pos) for sym, pos in bucket.positions.items() if pos.size != 0),
        key=lambda item: (item[1].size > 0,
                          -position_mm(pricing, item[0], item[1])[0], item[0]))
    if not order:
        raise MissingParameter(f"bucket {bucket.name!r} is liquidatable but holds no position")
    sym, pos = order[0]
    side = "short" if pos.size < 0 else "long"
    action: Literal["close_position", "bad_debt"] = "close_position"
    steps = ("incremental liquidation on the order book (limit orders every 2 s, up to 30 s; each "
             "fill pays the liquidation fee)")
    if h.bankrupt:
        action = "bad_debt"
        size = pos.size
        why = f"AB < 0: bankrupt, {profile.bad_debt_path}"
    else:
        g0 = h.equity - h.requirement
        whole, _ = close(pricing, bucket, sym, pos.size)
        e1, r1, _, _ = terms(pricing, whole)
        g1 = e1 - r1
        if g1 <= 0 or g1 == g0:
            size = pos.size
            why = f"{steps}: closing all of it does not restore AB > MM"
        else:
            share = -g0 / (g1 - g0)
            n = min(quantize_up(abs(pos.size) * share, profile.size_quantum), abs(pos.size))
            part, _ = close(pricing, bucket, sym, n.copy_sign(pos.size))
            e, r, _, _ = terms(pricing, part)
            if e <= r and n < abs(pos.size):  # on the line exactly: AB = MM is still liquidatable
                n = min(n + profile.size_quantum, abs(pos.size))
            size = n.copy_sign(pos.size)
            why = f"{steps}: the least that brings AB above MM ({fmt_num(share * 100, 2)}% of it)"
    done, fee = close(pricing, bucket, sym, size)
    after = health(pricing, done)
    return LiquidationPlan(
        rule=f"{head}; {sym} first ({side}; shorts first, then the largest MM); {why}; liquidation fee "
        f"{fmt_usd(fee)}",
        action=action,
        market=sym,
        size=size,
        notional=abs(size) * price_of(prices, sym),
        price=price_of(prices, sym),
        fee=fee,
        fee_asset=profile.settle_asset,
        health_after=None if action == "bad_debt" else after.health_factor,
    )
