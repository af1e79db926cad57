"""``plan_liquidation``: what the keeper would submit for a liquidatable bucket.

Which position or pair first (the deterministic cross-bucket rule, docs/margin.md):

* perpetuals: the position with the largest maintenance requirement, ties by market symbol;
* lending: the debt with the largest value, repaid against the collateral with the largest
  value (only assets that count as collateral), ties by asset symbol.

How much (``Profile.sizing``; lending in ``lending_sizing.py``):

* ``restore``: the least amount of that position (rounded up to ``size_quantum``) that brings
  the bucket back to ``target_health`` when closed at the mark price (after the market's
  ``liquidation_fee``); the whole position when even that does not suffice. Health is concave
  in the share closed, so the chord between "close nothing" and "close all" never asks too
  little.
* ``full``: the whole position (GMX); Hyperliquid sends ``slice_fraction`` of positions above
  ``slice_above_notional`` at a time.
* ``whole_bucket`` (the keeper's ``largest`` policy, ``profiles.with_policy``): the largest
  liquidation the venue accepts: every open position of the bucket closed in one request
  (action ``bad_debt`` without a market: the venue's whole-bucket liquidation, which closes each
  position at its mark and covers only what the whole bucket cannot pay), or, with one position,
  all of it (``close_position``, ``size`` the position's exact size: the venue's bound
  ``|size| <= |position|``, nothing to round). Closing positions one at a time can make the
  venue cover one position's loss that another position's profit would have paid.
* ``close_factor_max``: the most the close factor allows (Aave, Compound v2), bounded by the
  collateral, the dust rule and a ``LiquidationRequest``.
* ``absorb``: Comet's absorb (the protocol takes all collateral).
* ``max_allowed``: the most the venue accepts (MarginFi: maintenance health back to at most
  zero; Vertex: initial health at most zero), in ``venues/marginfi.py`` and ``venues/vertex.py``;
  Aevo's first liquidation step is in ``venues/aevo.py``.

A bankrupt bucket (equity < 0; lending: collateral below debt) takes the venue's bad-debt path:
action ``bad_debt`` with ``Profile.bad_debt_path`` in ``rule``.
"""

from __future__ import annotations

from decimal import Decimal

from keeper.domain.margin.health import entry_of, health_of, market_of, position_mm, quote_of
from keeper.domain.margin.lending_sizing import plan_lending
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.profiles import Profile
from keeper.domain.margin.tiers import brackets
from keeper.domain.margin.types import (
    ZERO,
    BucketHealth,
    LiquidationPlan,
    LiquidationRequest,
    MissingParameter,
    exact,
    fmt_num,
    fmt_usd,
    price_of,
    quantize_up,
)
from keeper.domain.margin.venues import aevo, marginfi, vertex
from keeper.domain.model import Bucket, Position

__all__ = ["close_part", "pick_position", "plan_liquidation", "plan_of"]


@exact
def plan_liquidation(
    pricing: Pricing,
    bucket: Bucket,
    request: LiquidationRequest | None = None,
    *,
    health: BucketHealth | None = None,
) -> LiquidationPlan | None:
    """The liquidation the keeper would submit, or None when the bucket is not liquidatable.

    ``health``: the bucket's ``evaluate`` at this very ``pricing``, when the caller has it already.
    """
    return plan_of(pricing, bucket, request, health)


def plan_of(
    pricing: Pricing, bucket: Bucket, request: LiquidationRequest | None, health: BucketHealth | None
) -> LiquidationPlan | None:
    """``plan_liquidation`` without its context wrapper: for code already inside the engine's
    Decimal context (see ``health.health_of``)."""
    if health is None:
        health = health_of(pricing, bucket)
    if not health.liquidatable:
        return None
    profile = pricing.profile
    if profile.model == "marginfi":
        return marginfi.plan(pricing, bucket, health, request)
    if profile.model == "vertex":
        return vertex.plan(pricing, bucket, health)
    if profile.model == "aevo":
        return aevo.plan(pricing, bucket, health)
    if profile.kind == "lending":
        return plan_lending(pricing, bucket, health, request)
    return _plan_perp(pricing, bucket, health)


# --- perpetuals -----------------------------------------------------------------------------


def _head(profile: Profile, h: BucketHealth) -> str:
    op = "<=" if profile.strictness == "le" else "<"
    return f"{profile.name}: equity {fmt_num(h.equity, 2)} {op} maintenance {fmt_num(h.requirement, 2)}"


def pick_position(pricing: Pricing, bucket: Bucket) -> str:
    """The market to close first: largest maintenance requirement, ties by symbol."""
    profile, markets, prices = pricing.profile, pricing.markets, pricing.prices
    best: str | None = None
    best_mm = Decimal(-1)
    for sym in sorted(bucket.positions):
        pos = bucket.positions[sym]
        if pos.size == 0:
            continue
        mm, _ = position_mm(profile, pos, brackets(market_of(markets, sym)), price_of(prices, sym))
        if mm > best_mm:
            best, best_mm = sym, mm
    if best is None:
        raise MissingParameter(f"bucket {bucket.name!r} is liquidatable but holds no position")
    return best


def close_part(bucket: Bucket, market: str, amount: Decimal, price: Decimal, fee_rate: Decimal) -> Bucket:
    """The bucket after closing ``amount`` (signed like the position) at ``price``.

    The realised PnL and the fee stay in the position's quote so equity is unchanged but for
    the fee; the entry price is kept so an entry-measured maintenance margin stays right.
    """
    pos = bucket.positions[market]
    quote = quote_of(pos) + amount * price - fee_rate * abs(amount) * price
    positions = dict(bucket.positions)
    positions[market] = Position(market, pos.size - amount, entry_price=entry_of(pos), quote=quote)
    return Bucket(bucket.name, dict(bucket.balances), positions)


def _plan_whole_bucket(pricing: Pricing, bucket: Bucket, h: BucketHealth, open_markets: list[str]
                       ) -> LiquidationPlan:
    """Every open position of ``bucket`` closed in one request (``whole_bucket``)."""
    markets, prices = pricing.markets, pricing.prices
    after = bucket
    notional = ZERO
    for m in open_markets:
        px = price_of(prices, m)
        notional += abs(bucket.positions[m].size) * px
        fee = market_of(markets, m).liquidation_fee or ZERO
        after = close_part(after, m, bucket.positions[m].size, px, fee)
    head = _head(pricing.profile, h)
    what = (f"equity < 0: bankrupt, {pricing.profile.bad_debt_path}" if h.bankrupt
            else "the largest liquidation the venue accepts")
    return LiquidationPlan(
        rule=f"{head}; {what}: close every position ({', '.join(open_markets)}) in one request",
        action="bad_debt",
        notional=notional,
        health_after=None if h.bankrupt else health_of(pricing, after).health_factor,
    )


def _plan_perp(pricing: Pricing, bucket: Bucket, h: BucketHealth) -> LiquidationPlan:
    profile, markets, prices = pricing.profile, pricing.markets, pricing.prices
    whole = profile.sizing == "whole_bucket"
    if whole:
        open_markets = [m for m in sorted(bucket.positions) if bucket.positions[m].size != 0]
        if len(open_markets) > 1:
            return _plan_whole_bucket(pricing, bucket, h, open_markets)
    market = pick_position(pricing, bucket)
    pos = bucket.positions[market]
    px = price_of(prices, market)
    fee = market_of(markets, market).liquidation_fee or ZERO
    notional_all = abs(pos.size) * px
    head = _head(profile, h)
    pick = f"{market} first (largest maintenance requirement)"

    def finish(size: Decimal, rule: str, action: str = "close_position") -> LiquidationPlan:
        after = health_of(pricing, close_part(bucket, market, size, px, fee))
        return LiquidationPlan(
            rule=rule,
            action="bad_debt" if action == "bad_debt" else "close_position",
            market=market,
            size=size,
            notional=abs(size) * px,
            health_after=None if action == "bad_debt" else after.health_factor,
        )

    if h.bankrupt:
        return finish(pos.size, f"{head}; equity < 0: bankrupt, {profile.bad_debt_path}", "bad_debt")
    if profile.backstop_fraction is not None and h.equity < profile.backstop_fraction * h.requirement:
        return finish(
            pos.size,
            f"{head}; equity < {fmt_num(profile.backstop_fraction, 4)} of maintenance: backstop "
            f"liquidation of the whole {market} position by the liquidator vault",
        )
    if whole:
        return finish(pos.size, f"{head}; {market}, the only position: all of it, the largest "
                                "liquidation the venue accepts")
    if profile.sizing == "full":
        if (
            profile.slice_fraction is not None
            and profile.slice_above_notional is not None
            and notional_all > profile.slice_above_notional
        ):
            size = quantize_up(abs(pos.size) * profile.slice_fraction, profile.size_quantum)
            size = min(size, abs(pos.size)).copy_sign(pos.size)
            return finish(
                size,
                f"{head}; {pick}: notional {fmt_usd(notional_all)} > "
                f"{fmt_usd(profile.slice_above_notional)}, "
                f"liquidate {fmt_num(profile.slice_fraction * 100, 2)}% slice",
            )
        return finish(pos.size, f"{head}; {pick}: the venue liquidates the whole position")
    # restore: the chord between closing nothing and closing everything
    tau = profile.target_health
    g0 = h.equity - tau * h.requirement
    full = health_of(pricing, close_part(bucket, market, pos.size, px, fee))
    g1 = full.equity - tau * full.requirement
    if g1 <= 0 or g1 == g0:
        return finish(pos.size, f"{head}; {pick}: closing all of it does not restore health {tau}")
    share = -g0 / (g1 - g0)
    size = min(quantize_up(abs(pos.size) * share, profile.size_quantum), abs(pos.size)).copy_sign(pos.size)
    return finish(
        size,
        f"{head}; {pick}: close the least that restores health {tau} "
        f"({fmt_num(share * 100, 2)}% of the position)",
    )
