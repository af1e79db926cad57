"""Liquidation and bankruptcy prices: the price of one market (or asset) that brings the
bucket's equity to its maintenance requirement (to zero), every other price held.

Health is piecewise linear in one price: linear inside a maintenance bracket (and, for Mango,
inside a sign of the settle token's total). The solver takes the line the bucket is on at the
current price, solves it, and if the answer lands on another piece (another bracket: Binance's
"recompute with that bracket") re-solves with that piece's line, until the answer lies on the
line that produced it. With the maintenance margin measured at entry (Bybit, KuCoin, GMX) the
requirement does not move with the price and one step suffices.

``None`` where no positive price satisfies the equation (a fully collateralised long, a bucket
without exposure to that price).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from keeper.domain.margin.health import perp_terms
from keeper.domain.margin.lending import lending_terms
from keeper.domain.margin.pricing import Pricing
from keeper.domain.margin.types import ZERO, exact, price_of
from keeper.domain.model import Bucket

__all__ = ["MAX_STEPS", "Line", "bankruptcy_price", "liquidation_price"]

MAX_STEPS = 64
_TINY = Decimal("1e-30")
_REL = Decimal("1e-45")

Line = Callable[[Decimal], tuple[Decimal, Decimal]]
"""price -> (h(price), dh/dprice) on the piece that holds price."""


def _solve(line: Line, start: Decimal) -> Decimal | None:
    p = start
    h, slope = line(p)
    for _ in range(MAX_STEPS):
        if h == 0:
            return p
        if slope == 0:
            return None
        nxt = p - h / slope
        if nxt <= 0:
            # This piece's root is not a price. The bucket may still reach the equation on a
            # lower bracket: continue from the smallest price once; from there the next step
            # is either on the right piece or again non-positive (no such price).
            if p == _TINY:
                return None
            nxt = _TINY
        h_next, slope_next = line(nxt)
        tolerance = (abs(nxt * slope) + abs(h)) * _REL
        if nxt != _TINY and slope_next == slope and abs(h_next) <= tolerance:
            # nxt is on the piece whose line produced it (same slope, and the line's value
            # there is zero up to the context's last digits), so it is that line's root.
            return nxt
        p, h, slope = nxt, h_next, slope_next
    return None


def _exposed(bucket: Bucket, symbol: str) -> bool:
    return symbol in bucket.positions or bucket.balances.get(symbol, ZERO) != 0


def _solve_for(pricing: Pricing, bucket: Bucket, market: str, *, with_requirement: bool) -> Decimal | None:
    if not _exposed(bucket, market):
        return None
    start = price_of(pricing.prices, market)
    lending = pricing.profile.kind == "lending"

    def line(p: Decimal) -> tuple[Decimal, Decimal]:
        at = pricing.with_price(market, p)
        if lending:
            t = lending_terms(at, bucket, wrt=market)
            if with_requirement:
                return t.collateral_value - t.debt_value, t.d_collateral - t.d_debt
            if t.raw_debt_value is not None:  # the debt value is weighted (MarginFi)
                return t.raw_collateral_value - t.raw_debt_value, t.d_raw_collateral - t.d_raw_debt
            return t.raw_collateral_value - t.debt_value, t.d_raw_collateral - t.d_debt
        terms = perp_terms(at, bucket, wrt=market)
        if with_requirement:
            return terms.equity - terms.requirement, terms.d_equity - terms.d_requirement
        return terms.equity, terms.d_equity

    return _solve(line, start)


@exact
def liquidation_price(pricing: Pricing, bucket: Bucket, market: str) -> Decimal | None:
    """The price of ``market`` at which equity equals the maintenance requirement (lending:
    threshold-weighted collateral equals debt, in exact Decimal), other prices held; None if
    none exists. The maintenance margin is measured where the profile says (``mm_at``)."""
    # Lending buckets are solved on the exact Decimal line (Aave's integer rounding moves the
    # answer by less than one oracle unit).
    return _solve_for(pricing, bucket, market, with_requirement=True)


@exact
def bankruptcy_price(pricing: Pricing, bucket: Bucket, market: str) -> Decimal | None:
    """The price of ``market`` at which equity is zero (lending: unweighted collateral equals
    debt), other prices held; None if none exists."""
    return _solve_for(pricing, bucket, market, with_requirement=False)
