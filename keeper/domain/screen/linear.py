"""Linearisation: a bucket's slack as a linear function of prices, the screen's model of a bucket.

For flat-rate models a bucket's slack ``equity - requirement`` is linear in each price:
``slack = const + sum_s coef_s * P_s`` where

- a perp position (signed ``size``) in market m adds ``coef_m += size - |size| * mmf`` (the
  maintenance margin measured at the mark price) and ``const += quote_value`` (``-size * entry``);
  with ``mm_at_entry`` the margin is ``|size| * entry * rate`` and goes into ``const``;
- a collateral balance ``b > 0`` of asset a adds ``coef_a += b * w`` with ``w`` the asset weight
  (capped at 1) or, for lending, the liquidation threshold (0 when missing);
- a debt ``b < 0`` adds ``coef_a += b * max(1, liability weight)``.

Each choice is at least as strict as the exact engine's (a smaller collateral weight, a larger
debt weight), so the linear slack never exceeds the exact one.

Tiered schedules are not linear; they are bounded. With ``N0`` the position's notional at the
linearisation price, the band is ``(0, C]`` where ``C`` is the first tier floor above ``2 * N0``
(infinite in the top tier), and the rate used is ``sup MM(N) / N`` over the band, so
``|size| * P * rate >= MM`` for every price in the band; the form holds while
``P <= C / |size|`` (``Linear.ceilings``).

Anything else (unknown market, no maintenance parameter, a missing price, a first tier with a
negative deduction) has no linear form: ``linearise`` returns None and the screen treats the
bucket as a candidate on every tick. ``screen_mode`` names the profiles whose health is not
linear this way at all.

Exact (Decimal) throughout: the screen converts to floats and widens afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final, NamedTuple, TypeVar

from keeper.domain.margin.health import quote_of
from keeper.domain.margin.tiers import derive_deductions, maintenance
from keeper.domain.model import AssetParams, Bucket, MarketParams

__all__ = ["Linear", "LinearForm", "as_dict", "balance_weight", "linear_form", "linearise", "screen_mode",
           "tier_bound"]

_V = TypeVar("_V")
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TIER_HEADROOM: Final = Decimal(2)

LinearForm = tuple[Decimal, dict[str, Decimal], dict[str, Decimal]]
"""``(const, coefs, ceilings)``: ``linear_form``'s result, the fields of ``Linear`` as a plain tuple."""


class Linear(NamedTuple):
    """A bucket's slack as ``const + sum coefs[s] * P_s``, valid while ``P_s <= ceilings[s]``."""

    const: Decimal
    coefs: dict[str, Decimal]
    ceilings: dict[str, Decimal]


def tier_bound(market: MarketParams, notional: Decimal) -> tuple[Decimal, Decimal | None] | None:
    """``(rate, ceiling)`` with ``notional' * rate >= MM(notional')`` for all ``0 < notional' <= ceiling``.

    ``ceiling`` is the first tier floor above twice ``notional`` (None: no ceiling). Returns None
    when no such rate exists (a first tier with a negative deduction). On each linear piece
    ``MM(N)/N = rate - deduction/N`` is monotone, so its supremum is at a piece's end.
    """
    tiers = [(b.floor, b.rate, b.deduction) for b in derive_deductions(market.mmf_tiers)]
    target = notional * _TIER_HEADROOM
    ceiling = next((floor for floor, _, _ in tiers if floor > target), None)
    best = _ZERO
    for i, (floor, rate, deduction) in enumerate(tiers):
        lo = _ZERO if i == 0 else floor
        if ceiling is not None and lo >= ceiling:
            break
        hi = tiers[i + 1][0] if i + 1 < len(tiers) else None
        if ceiling is not None and (hi is None or hi > ceiling):
            hi = ceiling
        best = max(best, rate if hi is None else rate - deduction / hi)
        if lo > 0:
            best = max(best, rate - deduction / lo)
        elif deduction < 0:
            return None
    return best, ceiling


def linearise(
    bucket: Bucket,
    markets: Mapping[str, MarketParams],
    assets: Mapping[str, AssetParams],
    prices: Mapping[str, Decimal],
    lending: bool,
    *,
    mm_at_entry: bool = False,
) -> Linear | None:
    """The bucket's slack as a linear function of prices (exact Decimal), or None if not linear.

    ``prices`` is read only to choose a tiered position's band. None means the screen must
    treat the bucket as always a candidate (unknown market, missing parameter or price).
    """
    form = linear_form(bucket, as_dict(markets), as_dict(assets), as_dict(prices), lending, mm_at_entry)
    return None if form is None else Linear(*form)


def as_dict(m: Mapping[str, _V]) -> dict[str, _V]:
    """``m`` as a dict (itself when it is one: a dict's ``get`` is a direct call when compiled,
    any other mapping's a method lookup)."""
    return m if isinstance(m, dict) else dict(m)


def linear_form(  # noqa: PLR0917 - linearise's arguments
    bucket: Bucket,
    markets: dict[str, MarketParams],
    assets: dict[str, AssetParams],
    prices: dict[str, Decimal],
    lending: bool,
    mm_at_entry: bool,
) -> LinearForm | None:
    """``linearise`` as a plain tuple, from dicts (what ``Screen.upsert`` reads: no record built)."""
    const = _ZERO
    coefs: dict[str, Decimal] = {}
    ceilings: dict[str, Decimal] = {}
    for sym, pos in sorted(bucket.positions.items()):
        if not pos.size:
            continue
        market = markets.get(sym)
        if market is None:
            return None
        size, abs_size = pos.size, abs(pos.size)
        quote = quote_of(pos)
        const += quote
        if mm_at_entry:
            entry = pos.entry_price if pos.entry_price is not None else -quote / size
            if market.mmf_tiers:
                const -= maintenance(derive_deductions(market.mmf_tiers), abs_size * entry)
            elif market.mmf is not None:
                const -= abs_size * entry * market.mmf
            elif market.max_leverage is not None:
                const -= abs_size * entry / (2 * market.max_leverage)
            else:
                return None
            coefs[sym] = coefs.get(sym, _ZERO) + size
            continue
        if market.mmf_tiers:
            price = prices.get(sym)
            if price is None:
                return None
            bound = tier_bound(market, abs_size * price)
            if bound is None:
                return None
            rate, ceiling = bound
            if ceiling is not None:
                ceilings[sym] = ceiling / abs_size
        elif market.mmf is not None:
            rate = market.mmf
        elif market.max_leverage is not None:
            rate = 1 / (2 * market.max_leverage)
        else:
            return None
        coefs[sym] = coefs.get(sym, _ZERO) + size - abs_size * rate
    for sym, bal in sorted(bucket.balances.items()):
        coefs[sym] = coefs.get(sym, _ZERO) + bal * balance_weight(assets.get(sym), bal > 0, lending)
    return const, coefs, ceilings


def balance_weight(params: AssetParams | None, collateral: bool, lending: bool) -> Decimal:
    """The weight ``linearise`` gives a balance of an asset with parameters ``params`` (None: not
    listed): a collateral (``> 0``) balance's asset weight (capped at 1; for ``lending``, the
    liquidation threshold, 0 when missing), a debt's ``max(1, liability weight)``."""
    if collateral:
        if lending:
            threshold = None if params is None else params.liquidation_threshold
            return _ZERO if threshold is None else threshold
        weight = None if params is None else params.asset_weight
        return _ONE if weight is None else min(_ONE, weight)
    liability = None if params is None else params.liability_weight
    return max(_ONE, _ONE if liability is None else liability)


_NONLINEAR_MODELS: Final = frozenset({"drift", "gmx", "mango", "morpho", "marginfi", "vertex", "aevo"})


def screen_mode(kind: str, model: str, mm_at: str) -> tuple[bool, bool, bool]:
    """``(lending, mm_at_entry, always_check)`` for ``Screen.upsert`` from a margin profile's fields.

    Drift (strict TWAP guards, liability weights on spot borrows), GMX (minimum collateral in
    USD) and Mango (weights applied after netting perps into the settle token) are not linear
    in prices the way the screen models them, nor is Morpho Blue's rule (collateral, price
    product and LLTV product each floored in token units: a few units off the linear slack, past
    the screen's tolerance on small positions): their buckets are always candidates. So are
    MarginFi's (prices biased by an oracle confidence the screen does not see, capped at a share
    of the price), Vertex's (explicit long/short weights and spread rebates beside ``mmf``) and
    Aevo's (options' standard margin on their underlying's price).
    """
    return kind == "lending", mm_at == "entry", model in _NONLINEAR_MODELS
