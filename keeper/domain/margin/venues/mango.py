"""Mango v4 health (``programs/mango-v4/src/health/cache.rs``), in exact Decimal.

``health = Σ tokens value·(asset weight if positive else liability weight)``, where each perp's
value ``base·price·(base asset weight if long else base liability weight) + quote`` (times the
overall asset weight when positive) is added to the settle token before weighting; deposit
weights scale down above ``deposit_weight_scale_start`` and borrow weights up above
``borrow_weight_scale_start``. Liquidation starts at maintenance health < 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

from keeper.domain.margin.types import ZERO, exact

__all__ = ["Perp", "Token", "health", "perp_value", "scaled_weights"]


class Token(NamedTuple):
    balance: Decimal
    price: Decimal
    asset_weight: Decimal
    liability_weight: Decimal
    deposits: Decimal | None = None  # the bank's total deposits (native), for weight scaling
    deposit_weight_scale_start: Decimal | None = None  # quote value
    borrows: Decimal | None = None
    borrow_weight_scale_start: Decimal | None = None


class Perp(NamedTuple):
    base: Decimal  # base native units, signed
    quote: Decimal
    price: Decimal
    base_asset_weight: Decimal
    base_liability_weight: Decimal
    overall_asset_weight: Decimal
    settle_token: str = "USDC"  # noqa: S105 -- a token symbol, not a secret


def scaled_weights(t: Token) -> tuple[Decimal, Decimal]:
    """The token's asset and liability weights after the bank's deposit/borrow scaling."""
    aw, lw = t.asset_weight, t.liability_weight
    if t.deposits is not None and t.deposit_weight_scale_start is not None:
        value = t.deposits * t.price
        if value > t.deposit_weight_scale_start:
            aw = aw * t.deposit_weight_scale_start / value
    if t.borrows is not None and t.borrow_weight_scale_start is not None:
        value = t.borrows * t.price
        if value > t.borrow_weight_scale_start:
            lw = lw * value / t.borrow_weight_scale_start
    return aw, lw


def perp_value(p: Perp) -> Decimal:
    """The perp's contribution to its settle token, before token weights."""
    w = p.base_asset_weight if p.base > 0 else p.base_liability_weight
    v = p.base * p.price * w + p.quote
    return v * p.overall_asset_weight if v > 0 else v


@exact
def health(tokens: Mapping[str, Token], perps: Sequence[Perp] = ()) -> Decimal:
    """The account's health with the weights given (init or maint, as the caller chooses)."""
    values = {sym: t.balance * t.price for sym, t in tokens.items()}
    for p in perps:
        values[p.settle_token] = values.get(p.settle_token, ZERO) + perp_value(p)
    total = ZERO
    for sym in sorted(values):
        aw, lw = scaled_weights(tokens[sym])
        v = values[sym]
        total += v * (aw if v > 0 else lw)
    return total
